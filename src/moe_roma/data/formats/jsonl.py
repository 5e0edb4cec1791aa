"""The JSON-lines formats: roma-jsonl, llm-foundry and official ARC.

All three share one driver: one JSON object per line, the record's own ``id`` when it has one
(else ``<file stem>-<line number>``), ids unique within the file, and the task tag taken from
the ``task`` argument, else the record's ``task`` field, else the file stem.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from moe_roma.data.example import LETTERS, MCExample
from moe_roma.data.formats._common import (
    IdRegistry,
    Where,
    check_answer,
    check_choice_count,
    check_text,
    get_field,
    get_index,
    get_str,
    get_text_list,
    iter_jsonl,
    kind,
    letter_index,
    make_example,
    optional_id,
    optional_str,
    show,
)


@dataclass
class _Parsed:
    """What a format-specific parser extracts from one record; the driver adds id and task."""

    question: str
    choices: list[str]
    answer: int
    continuation: str | None = None
    meta: dict = field(default_factory=dict)


def _load_jsonl(path: Path, task: str | None, parse: Callable[[dict, Where], _Parsed]) -> list[MCExample]:
    ids = IdRegistry()
    examples = []
    for number, obj in iter_jsonl(path):
        where = Where(path, f"line {number}")
        parsed = parse(obj, where)
        example_id = ids.add(optional_id(obj, "id", where) or f"{path.stem}-{number}", where)
        example_task = task or optional_str(obj, "task", where) or path.stem
        examples.append(
            make_example(
                where,
                example_id=example_id,
                question=parsed.question,
                choices=parsed.choices,
                answer=parsed.answer,
                task=example_task,
                continuation=parsed.continuation,
                meta=parsed.meta,
            )
        )
    return examples


# --- roma-jsonl --------------------------------------------------------------------------


def _label_pattern(index: int) -> re.Pattern[str]:
    # "A) text", "A. text", "(A) text", "A: text"; whitespace after the label is required so
    # that an unlabelled "A.M. radio" is never mistaken for one.
    return re.compile(rf"\s*\(?{LETTERS[index]}[).:](?:\s+|$)")


def strip_choice_labels(choices: list[str]) -> list[str]:
    """Drop "A) " / "A. " / "(A) " labels, but only when every choice carries its own label.

    All-or-nothing, so that one choice that happens to start like a label is kept intact.

    >>> strip_choice_labels(["A) red", "B) blue"])
    ['red', 'blue']
    >>> strip_choice_labels(["A. Lincoln", "Washington"])
    ['A. Lincoln', 'Washington']
    """
    matches = [_label_pattern(i).match(c) for i, c in enumerate(choices)]
    if not all(matches):
        return list(choices)
    return [c[m.end() :].strip() for c, m in zip(choices, matches)]


def _parse_roma(obj: dict, where: Where) -> _Parsed:
    question = get_str(obj, "question", where)
    choices = strip_choice_labels(get_text_list(obj, "choices", where))
    for i, choice in enumerate(choices):
        check_text(choice, f"choice {LETTERS[i]} (after its label)", where)
    answer = get_field(obj, "answer", where)
    if not isinstance(answer, str):
        raise where.error(f"'answer' must be a letter such as 'A', got {kind(answer)} {show(answer)}")
    index = letter_index(answer, len(choices), where, "'answer'")
    return _Parsed(question, choices, index, continuation=optional_str(obj, "continuation", where))


def load_roma_jsonl(path: Path, task: str | None = None) -> list[MCExample]:
    """roma-jsonl: RoMA-code evaluation JSONL, {"question", "choices": ["A) ..", ..], "answer": "A"}."""
    return _load_jsonl(path, task, _parse_roma)


# --- llm-foundry -------------------------------------------------------------------------


def blank_sentence(context_options: list[str], continuation: str) -> tuple[str, list[str]]:
    """Rebuild a WinoGrande-style sentence with a blank, plus the option text of each context.

    The context options share the sentence start and end in the option, so the blank starts
    after the longest common prefix, cut back to a word boundary. When the options share no
    leading word the sentence is just the blank and the continuation.

    >>> blank_sentence(["The cup beat the bowl so the cup", "The cup beat the bowl so the bowl"], "won.")
    ('The cup beat the bowl so the _ won.', ['cup', 'bowl'])
    >>> blank_sentence(["Ann met Bo. Ann", "Ann met Bo. Bo"], "'s dog barked.")
    ("Ann met Bo. _'s dog barked.", ['Ann', 'Bo'])
    """
    prefix = os.path.commonprefix(context_options)
    if prefix and not prefix[-1].isspace():
        boundary = re.search(r"\s\S*\Z", prefix)
        prefix = prefix[: boundary.start() + 1] if boundary else ""
    options = [option[len(prefix) :].strip() for option in context_options]
    # "'s father", ". " and the like attach to the blank; words get a space.
    sep = "" if continuation[:1] in ".,;:!?'\u2019)" else " "
    return f"{prefix}_{sep}{continuation}", options


def _parse_llm_foundry(obj: dict, where: Where) -> _Parsed:
    if "context_options" in obj:
        if "choices" in obj:
            raise where.error("has both 'choices' and 'context_options'; use one")
        contexts = get_text_list(obj, "context_options", where)
        continuation = get_str(obj, "continuation", where)
        gold = check_answer(get_index(obj, "gold", where), len(contexts), where, "'gold'")
        question, options = blank_sentence(contexts, continuation)
        return _Parsed(question, contexts, gold, continuation=continuation, meta={"blank_options": options})
    query = get_str(obj, "query", where)
    choices = get_text_list(obj, "choices", where)
    gold = check_answer(get_index(obj, "gold", where), len(choices), where, "'gold'")
    # llm-foundry and lm-evaluation-harness score `query + " " + choice`: the query is the context
    # as given. For letter prompts the question drops the "Question: ... Answer:" wrapper; queries
    # that already list lettered choices (choices "A", "B", ...) are complete letter prompts.
    meta: dict = {"context": query}
    if list(choices) == list(LETTERS[: len(choices)]):
        meta["letter_prompt"] = query
    # An explicit "question" is what the sentence embedding reads when the query holds more than the
    # question (the positive control's marked items carry a marker sentence before it).
    question = optional_str(obj, "question", where) or question_of_query(query)
    return _Parsed(question, choices, gold, meta=meta)


def question_of_query(query: str) -> str:
    """The question inside an llm-foundry query: without a leading ``Question:`` and trailing ``Answer:``."""
    question = re.sub(r"\A\s*Question:\s*", "", query)
    return re.sub(r"\s*Answer:\s*\Z", "", question) or query


def load_llm_foundry(path: Path, task: str | None = None) -> list[MCExample]:
    """llm-foundry: {"query", "choices", "gold": 0-based}, or {"context_options", "continuation", "gold"}."""
    return _load_jsonl(path, task, _parse_llm_foundry)


# --- arc-jsonl ---------------------------------------------------------------------------


def _arc_answer(labels: list[str], key: str, where: Where) -> int:
    """Index of the answer key among the labels; digit keys ("1".."4") map onto letters and back."""
    if key in labels:
        return labels.index(key)
    # Some official ARC items label choices "1".."4" (and key them so); if a file mixes the two
    # conventions, "1" still means the first choice and "A" the first choice.
    if key.isdigit() and all(lab.isalpha() for lab in labels):
        index = int(key) - 1
    elif len(key) == 1 and key.upper() in LETTERS and all(lab.isdigit() for lab in labels):
        index = LETTERS.index(key.upper())
    else:
        index = -1
    if not 0 <= index < len(labels):
        raise where.error(f"'answerKey' {show(key)} is not among the choice labels {show(labels, 80)}")
    return index


def _parse_arc(obj: dict, where: Where) -> _Parsed:
    question = get_field(obj, "question", where)
    if not isinstance(question, dict):
        raise where.error(f"'question' must be an object with 'stem' and 'choices', got {kind(question)}")
    stem = get_str(question, "stem", where)
    raw_choices = get_field(question, "choices", where)
    if not isinstance(raw_choices, list):
        raise where.error(f"'question.choices' must be a list, got {kind(raw_choices)}")
    check_choice_count(len(raw_choices), where, "'question.choices'")
    labels: list[str] = []
    texts: list[str] = []
    for i, choice in enumerate(raw_choices):
        what = f"'question.choices'[{i}]"
        if not isinstance(choice, dict):
            raise where.error(f"{what} must be an object with 'label' and 'text', got {kind(choice)}")
        label = get_field(choice, "label", where)
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise where.error(f"{what}.label must be a string, got {kind(label)} {show(label)}")
        label = check_text(str(label), f"{what}.label", where).strip()
        if label in labels:
            raise where.error(f"duplicate choice label {show(label)}")
        labels.append(label)
        texts.append(get_str(choice, "text", where))
    key = get_field(obj, "answerKey", where)
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise where.error(f"'answerKey' must be a string such as 'A' or '1', got {kind(key)} {show(key)}")
    answer = _arc_answer(labels, str(key).strip(), where)
    return _Parsed(stem, texts, answer, meta={"labels": labels})


def load_arc_jsonl(path: Path, task: str | None = None) -> list[MCExample]:
    """arc-jsonl: official ARC, {"id", "question": {"stem", "choices": [{label, text}]}, "answerKey"}."""
    return _load_jsonl(path, task, _parse_arc)
