"""Load multiple-choice data from any supported format into ``MCExample`` lists.

``load_examples(path)`` detects the format from the path and the first record; pass
``format=`` to override. Every problem with the input raises ``DataError`` naming the file,
the record and what is wrong, and nothing else.

>>> import json, pathlib, tempfile
>>> p = pathlib.Path(tempfile.mkdtemp()) / "demo.jsonl"
>>> _ = p.write_text(json.dumps({"query": "2 + 2 =", "choices": ["3", "4"], "gold": 1}) + "\\n")
>>> detect_format(p)
'llm-foundry'
>>> [(ex.id, ex.choices, ex.answer_letter, ex.task) for ex in load_examples(p)]
[('demo-1', ('3', '4'), 'B', 'demo')]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from moe_roma.data.example import LETTERS, MCExample
from moe_roma.data.formats._common import Where, parse_json_object, show, visible
from moe_roma.data.formats.jsonl import load_arc_jsonl, load_llm_foundry, load_roma_jsonl
from moe_roma.data.formats.mmlu import csv_files, load_mmlu_csv
from moe_roma.data.formats.obqa import load_obqa_tsv
from moe_roma.data.hf_source import is_datasets_source, load_datasets_examples
from moe_roma.data.presets import FieldMap, detect_preset
from moe_roma.io.errors import DataError, warn
from moe_roma.io.paths import check_not_special

# A loader takes the path and the task override and returns validated examples.
Loader = Callable[[Path, str | None], list[MCExample]]

FORMATS: dict[str, Loader] = {
    "roma-jsonl": load_roma_jsonl,
    "llm-foundry": load_llm_foundry,
    "arc-jsonl": load_arc_jsonl,
    "obqa-tsv": load_obqa_tsv,
    "mmlu-csv": load_mmlu_csv,
}


def describe_formats() -> str:
    """One line per format: its name and what a record looks like (from the loader's docstring)."""
    width = max(map(len, FORMATS))
    lines = []
    for name, loader in FORMATS.items():
        # The docstring's first paragraph, which may wrap over lines.
        first = (loader.__doc__ or "").strip().split("\n\n")[0]
        summary = " ".join(line.strip() for line in first.splitlines())
        summary = summary.split(": ", 1)[1] if summary.startswith(f"{name}: ") else summary
        lines.append(f"{name.ljust(width)}  {summary}")
    return "\n".join(lines)


def _known() -> str:
    return ", ".join(FORMATS)


def normalize_format(name: str, path: str | Path | None = None) -> str:
    """The canonical format name ("MMLU_CSV" -> "mmlu-csv"), or a DataError listing the formats."""
    key = name.strip().lower().replace("_", "-")
    if key not in FORMATS:
        raise DataError(path, None, f"unknown format {show(name)}; known formats: {_known()}")
    return key


def _first_record_line(path: Path) -> tuple[int, str] | None:
    """(line number, text) of the first non-blank line, read lazily: detection never loads the file."""
    where = Where(path)
    try:
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if raw.strip():
                    try:
                        return number, raw.decode("utf-8-sig").rstrip("\r\n")
                    except UnicodeDecodeError:
                        raise DataError(
                            path, f"line {number}", "is not UTF-8 text; binary or wrongly encoded file?"
                        ) from None
    except OSError as exc:
        raise where.error(f"cannot be read ({exc.strerror or exc})") from None
    return None


def _format_of_json(obj: dict, where: Where) -> str:
    if "context_options" in obj or "query" in obj:
        return "llm-foundry"
    question = obj.get("question")
    if isinstance(question, dict):
        return "arc-jsonl"
    if "question" in obj and "choices" in obj:
        return "roma-jsonl"
    raise where.error(
        f"cannot tell the format from fields {show(sorted(map(str, obj)), 80)}; pass a format, one of: "
        f"{_known()}"
    )


def detect_format(path: str | Path) -> str:
    """The name of the format of ``path`` (a file or, for MMLU, a folder of CSVs).

    A folder is MMLU CSV; a file is judged by its first non-blank line (JSON keys, or the
    OpenBookQA TSV header), then by its extension.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "no such file or folder")
    check_not_special(path, "data file")
    if path.is_dir():
        csv_files(path)  # raises the helpful "point at one split" error for the top MMLU folder
        return "mmlu-csv"
    first = _first_record_line(path)
    if first is None:
        raise DataError(path, None, "file is empty")
    number, line = first
    where = Where(path, f"line {number}")
    suffix = path.suffix.lower()
    if line.lstrip().startswith("{") or suffix in (".jsonl", ".json", ".ndjson"):
        return _format_of_json(parse_json_object(line, where), where)
    if "\t" in line and "Question Stem" in line.split("\t"):
        return "obqa-tsv"
    if suffix == ".csv":
        return "mmlu-csv"
    if suffix == ".tsv":
        return "obqa-tsv"
    raise DataError(path, None, f"cannot detect the format; pass one of: {_known()}")


def load_examples(
    path: str | Path,
    format: str | None = None,
    task: str | None = None,
    preset: str | None = None,
    fields: FieldMap | None = None,
) -> list[MCExample]:
    """Load and validate every example in ``path``.

    ``path`` may also be a Hugging Face dataset (``hf:NAME[:CONFIG][:SPLIT]``), a parquet or arrow
    file, or a ``save_to_disk`` folder: those are read by ``datasets`` and mapped by ``preset`` (a
    name from ``data.presets.PRESETS``; detected from the columns when not given) or by ``fields``.
    A JSON file that no built-in format reads goes the same way when a preset matches its columns.

    ``format`` overrides detection (see ``FORMATS``); ``task``, when given, tags every example
    (otherwise: the record's ``task`` field, else the MMLU subject, else the file stem;
    OpenBookQA TSVs default to ``openbookqa``; a preset's own name for ``datasets`` sources).
    """
    if format is None and (preset or fields or is_datasets_source(path)):
        examples = load_datasets_examples(path, preset=preset, fields=fields, task=task or None)
        _warn_on_repeated_choices(Path(str(path)), examples)
        return examples
    path = Path(path)
    name = normalize_format(format, path) if format is not None else None
    if not path.exists():
        raise DataError(path, None, "no such file or folder")
    check_not_special(path, "data file")  # a FIFO would block forever, /dev/zero never end
    if name is None:
        try:
            name = detect_format(path)
        except DataError as exc:
            # JSON in a hub dataset's own schema (e.g. `to_json` of SciQ): read it with datasets if a
            # preset fits.
            if (
                path.is_file()
                and path.suffix.lower() in (".json", ".jsonl", ".ndjson")
                and "cannot tell the format" in str(exc)
            ):
                first = _first_record_line(path)
                columns = list(parse_json_object(first[1], Where(path)).keys()) if first else []
                if detect_preset(columns) is not None:
                    return load_examples(path, task=task, preset=detect_preset(columns).name)
            raise
    examples = FORMATS[name](path, task or None)
    _warn_on_repeated_choices(path, examples)
    return examples


def _repeats_a_choice(example: MCExample) -> bool:
    return len({visible(c) for c in example.choices}) < len(example.choices)


def _warn_on_repeated_choices(path: Path, examples: Sequence[MCExample]) -> None:
    """Some published benchmarks list one choice twice (ARC-Easy 7 of 2376 questions, MMLU test 9 of
    14079): they are kept and scored as given, as lm-evaluation-harness scores them, but named."""
    repeated = [ex for ex in examples if _repeats_a_choice(ex)]
    if repeated:
        first = repeated[0]
        where = first.meta.get("record") or f"id {first.id}"
        warn(
            f"{path}: {len(repeated)} of {len(examples)} questions list the same choice twice (first: "
            f"{where}); they are scored as given, and a tie goes to the earlier copy"
        )


def summarize_examples(examples: Sequence[MCExample]) -> dict[str, Any]:
    """Counts for a quick look at a data set: examples, tasks, choices per question, answers.

    >>> summarize_examples([MCExample("1", "q", ("a", "b"), 1, task="t")])["choice_histogram"]
    {'2': 1}
    """
    choices = Counter(len(ex.choices) for ex in examples)
    answers = Counter(ex.answer for ex in examples)
    tasks = Counter(ex.task for ex in examples)
    return {
        "n_examples": len(examples),
        "n_tasks": len(tasks),
        # most common first, ties by name, so the output is stable
        "tasks": dict(sorted(tasks.items(), key=lambda kv: (-kv[1], kv[0]))),
        "choice_histogram": {str(n): choices[n] for n in sorted(choices)},
        "answer_histogram": {LETTERS[i]: answers[i] for i in sorted(answers)},
        "n_continuation": sum(ex.continuation is not None for ex in examples),
        "n_repeated_choices": sum(_repeats_a_choice(ex) for ex in examples),
    }
