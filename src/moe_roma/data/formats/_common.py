"""Shared reading and validation helpers for the format loaders.

Every check raises ``DataError(path, record, problem)``: the loaders know which file and which
record is at fault, so the user gets one sentence that points at the line to fix. Anything
taken from the file is shown through ``show()`` (``repr``, truncated) so that a message is
always a single line, whatever the data holds.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moe_roma.data.example import LETTERS, MAX_CHOICES, MIN_CHOICES, MCExample
from moe_roma.io.errors import DataError

_JSON_TYPE_NAMES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def show(value: Any, limit: int = 60) -> str:
    """A short, single-line rendering of a value from the data, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def kind(value: Any) -> str:
    """The JSON name of a value's type ('a string', 'an integer', ...)."""
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class Where:
    """A file and a record in it; ``error()`` builds the DataError that blames them."""

    path: Path
    record: str | None = None

    def error(self, problem: str) -> DataError:
        return DataError(self.path, self.record, problem)


def read_text(path: Path) -> str:
    """The whole file as text: UTF-8 (a leading BOM is dropped), not empty.

    Undecodable bytes are reported with the line they sit on, since that is where a user
    looks first (a file saved as Latin-1, or a binary file passed by mistake).
    """
    where = Where(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise where.error("no such file or folder") from None
    except IsADirectoryError:
        raise where.error("is a folder; this format expects a file") from None
    except OSError as exc:
        raise where.error(f"cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            path,
            f"line {line}",
            f"is not UTF-8 text (byte 0x{data[exc.start]:02x}); binary or wrongly encoded file?",
        ) from None
    if not text.strip():
        raise where.error("file is empty")
    return text


def split_lines(text: str) -> list[str]:
    r"""Lines split on ``\n`` only (a trailing ``\r`` dropped).

    ``str.splitlines`` would also split on U+2028 and friends, which may legally appear inside
    a JSON string or a TSV field, and would shift every line number after them.
    """
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def _reject_constant(name: str) -> float:
    # json.loads accepts NaN/Infinity by default; they are not JSON and never a valid label.
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(line: str, where: Where) -> dict:
    """One JSONL line as a dict, or a DataError saying why it is not one."""
    try:
        obj = json.loads(line, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise where.error(f"malformed or truncated JSON ({exc.msg}, column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # NaN/Infinity, huge integers, deep nesting
        raise where.error(f"unusable JSON ({show(str(exc), 80)[1:-1]})") from None
    if not isinstance(obj, dict):
        hint = "; JSONL needs one object per line" if isinstance(obj, list) else ""
        raise where.error(f"expected a JSON object, got {kind(obj)}{hint}")
    return obj


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file."""
    for number, line in enumerate(split_lines(read_text(path)), start=1):
        if line.strip():
            yield number, parse_json_object(line, Where(path, f"line {number}"))


MAX_TEXT_CHARS = 100_000  # one question, choice or passage; a longer one is a whole document pasted in


def check_text(value: str, what: str, where: Where, *, allow_empty: bool = False) -> str:
    """``value`` if it is usable text; blank, NUL, unpaired surrogates and over-long text are refused."""
    if len(value) > MAX_TEXT_CHARS:
        raise where.error(
            f"{what} is {len(value)} characters long; the limit is {MAX_TEXT_CHARS} characters for one "
            "question, choice or passage"
        )
    if not allow_empty and not value.strip():
        raise where.error(f"{what} is empty")
    if not allow_empty and not visible(value):
        raise where.error(f"{what} is invisible: it holds only zero-width or other format characters")
    if "\x00" in value:
        raise where.error(f"{what} contains a NUL character (binary data?)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        # A lone "\ud800" escape decodes in JSON but breaks every tokenizer and JSON writer later.
        raise where.error(f"{what} contains an invalid character {show(value[exc.start])}") from None
    return value


def visible(text: str) -> str:
    """``text`` as a reader sees it: NFC, without zero-width and other format characters, stripped.

    >>> visible("fas\u200bter "), visible("\u200b\u200d")
    ('faster', '')
    """
    return "".join(c for c in unicodedata.normalize("NFC", text) if unicodedata.category(c) != "Cf").strip()


def get_field(obj: dict, key: str, where: Where) -> Any:
    if key not in obj:
        raise where.error(f"missing field {key!r} (fields present: {show(sorted(map(str, obj)), 80)})")
    return obj[key]


def get_str(obj: dict, key: str, where: Where, *, allow_empty: bool = False) -> str:
    value = get_field(obj, key, where)
    if not isinstance(value, str):
        raise where.error(f"{key!r} must be a string, got {kind(value)} {show(value)}")
    return check_text(value, repr(key), where, allow_empty=allow_empty)


def get_index(obj: dict, key: str, where: Where) -> int:
    """An integer field (an integral float such as 2.0 is accepted; NaN, inf, 2.5, true are not)."""
    value = get_field(obj, key, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise where.error(f"{key!r} must be an integer, got {kind(value)} {show(value)}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise where.error(f"{key!r} must be a finite integer, got {value}")
        if not value.is_integer():
            raise where.error(f"{key!r} must be an integer, got a number {value}")
        value = int(value)
    return value


def get_text_list(obj: dict, key: str, where: Where) -> list[str]:
    """A list of non-empty strings with a supported length (2..26)."""
    value = get_field(obj, key, where)
    if not isinstance(value, list):
        raise where.error(f"{key!r} must be a list of strings, got {kind(value)} {show(value)}")
    check_choice_count(len(value), where, repr(key))
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise where.error(f"{key!r}[{i}] must be a string, got {kind(item)} {show(item)}")
        check_text(item, f"{key!r}[{i}]", where)
    return value


def check_choice_count(n: int, where: Where, what: str = "choices") -> None:
    if n < MIN_CHOICES:
        raise where.error(
            f"{what} has {n} item{'s' if n != 1 else ''}; a question needs at least {MIN_CHOICES}"
        )
    if n > MAX_CHOICES:
        raise where.error(f"{what} has {n} items; at most {MAX_CHOICES} (labels A-Z) are supported")


def check_answer(answer: int, n_choices: int, where: Where, what: str = "answer") -> int:
    if not 0 <= answer < n_choices:
        # show(): a gold of 1e300 is an integer, but its 301 digits do not belong in a one-line message
        raise where.error(
            f"{what} is {show(answer)} but there are {n_choices} choices (valid: 0..{n_choices - 1})"
        )
    return answer


def letter_index(label: str, n_choices: int, where: Where, what: str) -> int:
    """0-based index of an answer letter such as 'C' (or 'c', '(C)', 'C)')."""
    core = label.strip().strip("().:").strip().upper()
    if len(core) != 1 or core not in LETTERS:
        raise where.error(f"{what} must be a letter A-Z, got {show(label)}")
    index = LETTERS.index(core)
    if index >= n_choices:
        raise where.error(
            f"{what} is {show(label)} but there are only {n_choices} choices (A-{LETTERS[n_choices - 1]})"
        )
    return index


def optional_id(obj: dict, key: str, where: Where) -> str | None:
    """The record's own id (a non-empty string or an integer), or None when absent."""
    if key not in obj or obj[key] is None:
        return None
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise where.error(f"{key!r} must be a string or an integer, got {kind(value)} {show(value)}")
    return check_text(str(value), repr(key), where)


def optional_str(obj: dict, key: str, where: Where) -> str | None:
    if key not in obj or obj[key] is None:
        return None
    return get_str(obj, key, where)


class IdRegistry:
    """Ids seen so far in one file; a repeated id is an error naming both records."""

    def __init__(self) -> None:
        self._seen: dict[str, str | None] = {}

    def add(self, example_id: str, where: Where) -> str:
        if example_id in self._seen:
            first = self._seen[example_id]
            raise where.error(f"duplicate id {show(example_id)} (first used at {first})")
        # "line 2 (id 7-1)" -> "line 2": the id is already in the message
        self._seen[example_id] = (where.record or "").split(" (")[0]
        return example_id


def make_example(
    where: Where,
    *,
    example_id: str,
    question: str,
    choices: list[str] | tuple[str, ...],
    answer: int,
    task: str,
    continuation: str | None = None,
    meta: dict | None = None,
) -> MCExample:
    """Build the example after the last range checks, so MCExample's own ValueError never fires."""
    check_choice_count(len(choices), where)
    check_answer(answer, len(choices), where)
    seen: dict[str, int] = {}
    for i, choice in enumerate(choices):
        key = visible(choice)
        j = seen.setdefault(key, i)
        if j != i and choices[j] != choice:
            raise where.error(
                f"choices {j + 1} and {i + 1} ({show(choices[j])} and {show(choice)}) differ only by "
                "invisible characters; a reader could not tell them apart"
            )
    info = {"source": str(where.path), "record": where.record}
    info.update(meta or {})
    return MCExample(
        id=example_id,
        question=question,
        choices=tuple(choices),
        answer=answer,
        task=task,
        continuation=continuation,
        meta=info,
    )
