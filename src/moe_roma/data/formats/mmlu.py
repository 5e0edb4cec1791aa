"""The official MMLU CSVs (hendrycks/test): one headerless file per subject and split.

Each row is ``question, A, B, C, D, answer letter`` (any 2..26 choices are accepted, but every
row of a file must have the same number of fields). The task tag is the subject, taken from the
file name (``abstract_algebra_test.csv`` -> ``abstract_algebra``); ids are
``subject/split/row`` with 1-based rows.

Given the top ``mmlu`` folder (with ``dev``/``val``/``test`` inside) the loader refuses and asks
for one split folder: silently picking one would make it easy to train on the test split.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from moe_roma.data.example import MCExample
from moe_roma.data.formats._common import (
    IdRegistry,
    Where,
    check_choice_count,
    check_text,
    letter_index,
    make_example,
    read_text,
)

# Longest first, so that "x_auxiliary_train" is not read as split "train" of subject "x_auxiliary".
SPLITS = ("auxiliary_train", "train", "test", "dev", "val")


def subject_and_split(path: Path) -> tuple[str, str | None]:
    """("abstract_algebra", "test") from ``.../abstract_algebra_test.csv``; split None if unknown.

    >>> subject_and_split(Path("mmlu/test/abstract_algebra_test.csv"))
    ('abstract_algebra', 'test')
    >>> subject_and_split(Path("anatomy.csv"))
    ('anatomy', None)
    """
    stem = path.stem
    for split in SPLITS:
        if stem.endswith(f"_{split}") and len(stem) > len(split) + 1:
            return stem[: -len(split) - 1], split
    return stem, (path.parent.name if path.parent.name in SPLITS else None)


def csv_files(path: Path) -> list[Path]:
    """The CSV files to read for ``path`` (a file, or a folder of per-subject files)."""
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".csv" and not p.name.startswith("."))
    if files:
        return files
    splits = sorted(p.name for p in path.iterdir() if p.is_dir() and any(p.glob("*.csv")))
    if splits:
        example = path / ("test" if "test" in splits else splits[0])
        raise Where(path).error(
            f"holds split folders ({', '.join(splits)}), not CSV files; point at one split, e.g. {example}"
        )
    raise Where(path).error("folder has no .csv files")


def _load_file(path: Path, task: str | None, ids: IdRegistry) -> list[MCExample]:
    subject, split = subject_and_split(path)
    reader = csv.reader(io.StringIO(read_text(path), newline=""), strict=True)
    examples: list[MCExample] = []
    width: int | None = None
    row = 0
    last_line = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise Where(path, f"row {row + 1} (line {reader.line_num})").error(
                f"malformed CSV ({exc})"
            ) from None
        first_line, last_line = last_line + 1, reader.line_num
        if not any(f.strip() for f in fields):
            continue  # blank line
        row += 1
        where = Where(path, f"row {row} (line {first_line})")
        if width is None:
            if len(fields) < 4:
                raise where.error(
                    f"has {len(fields)} field{'s' if len(fields) != 1 else ''}; expected question, choices, "
                    "answer letter"
                )
            check_choice_count(len(fields) - 2, where)
            width = len(fields)
        elif len(fields) != width:
            raise where.error(f"has {len(fields)} fields but row 1 has {width}")
        question = check_text(fields[0], "the question", where)
        choices = [check_text(text, f"choice {i + 1}", where) for i, text in enumerate(fields[1:-1])]
        answer = letter_index(fields[-1], len(choices), where, "the answer letter")
        example_id = f"{subject}/{split}/{row}" if split else f"{path.stem}-{row}"
        examples.append(
            make_example(
                where,
                example_id=ids.add(example_id, where),
                question=question,
                choices=choices,
                answer=answer,
                task=task or subject,
                meta={"split": split},
            )
        )
    if not examples:
        raise Where(path).error("has no rows (only blank lines or empty fields)")
    return examples


def load_mmlu_csv(path: Path, task: str | None = None) -> list[MCExample]:
    """mmlu-csv: a split folder (or one file) of headerless MMLU CSVs: question, A, B, C, D, answer letter."""
    ids = IdRegistry()
    examples: list[MCExample] = []
    for file in csv_files(path):
        examples.extend(_load_file(file, task, ids))
    return examples
