"""The official OpenBookQA TSV release (``train.tsv``, ``dev.tsv``, ``test.tsv``).

A header row names the columns (``ID``, ``Question Stem``, ``Choices``, ``Complete Question``,
``Answer Key``; extra columns, as in the "additional" release, are ignored). Choices are one
field: ``(A) text (B) text (C) text (D) text``. Ids such as ``7-980`` are kept: the RoMA-code
routing results are keyed by them.
"""

from __future__ import annotations

import re
from pathlib import Path

from moe_roma.data.example import LETTERS, MCExample
from moe_roma.data.formats._common import (
    IdRegistry,
    Where,
    check_choice_count,
    check_text,
    letter_index,
    make_example,
    read_text,
    show,
    split_lines,
)

REQUIRED_COLUMNS = ("ID", "Question Stem", "Choices", "Answer Key")
DEFAULT_TASK = "openbookqa"


def split_labelled_choices(text: str, where: Where, what: str = "'Choices'") -> list[str]:
    """Split "(A) x (B) y ..." into ["x", "y", ...].

    Labels are taken in order, A then B then C ...: a label out of sequence stays part of the
    text before it. The official train split has one such item (12-1145, whose choice D reads
    "baby birds chewing worms (D) mother dogs nursing their pups"); it is kept, not dropped.

    >>> split_labelled_choices("(A) red (B) blue (C) a (B) b", Where(Path("x.tsv")))
    ['red', 'blue', 'a (B) b']
    """
    starts: list[tuple[int, int]] = []  # (label start, text start) per choice
    position = 0
    for letter in LETTERS:
        found = re.compile(rf"\({letter}\)").search(text, position)
        if found is None:
            break
        if not starts and text[: found.start()].strip():
            raise where.error(f"{what} must start with '(A)', got {show(text)}")
        starts.append((found.start(), found.end()))
        position = found.end()
    if not starts:
        raise where.error(f"{what} has no '(A) ... (B) ...' labels: {show(text)}")
    check_choice_count(len(starts), where, what)
    ends = [label_start for label_start, _ in starts[1:]] + [len(text)]
    choices = [text[start:end].strip() for (_, start), end in zip(starts, ends)]
    for letter, choice in zip(LETTERS, choices):
        check_text(choice, f"choice ({letter})", where)
    return choices


def load_obqa_tsv(path: Path, task: str | None = None) -> list[MCExample]:
    """obqa-tsv: official OpenBookQA TSV with a header: ID, Question Stem, Choices "(A) .. (B) ..",
    Answer Key."""
    lines = split_lines(read_text(path))
    header = lines[0].split("\t")
    columns = {name.strip(): i for i, name in enumerate(header)}
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise Where(path, "line 1 (header)").error(
            f"missing column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; "
            f"found {show([h.strip() for h in header], 100)}"
        )
    ids = IdRegistry()
    examples = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        where = Where(path, f"line {number}")
        # Quotes are literal in these files, so plain splitting (not csv) matches the release.
        fields = line.split("\t")
        if len(fields) != len(header):
            raise where.error(f"has {len(fields)} tab-separated fields; the header has {len(header)}")
        own_id = fields[columns["ID"]].strip()
        if own_id:
            check_text(own_id, "'ID'", where)
            if own_id.isprintable():  # naming the id helps, but never at the cost of a one-line message
                where = Where(path, f"line {number} (id {own_id})")
        example_id = ids.add(own_id or f"{path.stem}-{number}", where)
        question = check_text(fields[columns["Question Stem"]].strip(), "'Question Stem'", where)
        choices = split_labelled_choices(fields[columns["Choices"]], where)
        answer = letter_index(fields[columns["Answer Key"]], len(choices), where, "'Answer Key'")
        examples.append(
            make_example(
                where,
                example_id=example_id,
                question=question,
                choices=choices,
                answer=answer,
                task=task or DEFAULT_TASK,
            )
        )
    if not examples:
        raise Where(path).error("has a header but no rows")
    return examples
