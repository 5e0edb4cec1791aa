"""``roma data``: look at multiple-choice data before using it.

``roma data inspect FILE_OR_DIR [--format F] [--json]`` loads and validates the data and prints
its format, the number of examples, the largest tasks and how many choices the questions have.
A bad file stops with one sentence naming the file and the record (exit status 2).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from moe_roma.data.loaders import (
    describe_formats,
    detect_format,
    load_examples,
    normalize_format,
    summarize_examples,
)

TOP_TASKS = 8
BAR_WIDTH = 40


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data`` and its ``inspect`` sub-command to the ``roma`` parser."""
    parser = subparsers.add_parser(
        "data",
        help="inspect multiple-choice data files",
        description="Look at multiple-choice data before using it.",
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    inspect = actions.add_parser(
        "inspect",
        help="validate a data file or folder and show what is in it",
        description="Validate a data file or folder and show its format, size, tasks and choice counts.",
        epilog="formats:\n" + describe_formats(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect.add_argument("path", metavar="FILE_OR_DIR", help="data file, or a folder of MMLU CSVs")
    # Not argparse `choices`: an unknown name should fail like any other bad input, in one line.
    inspect.add_argument("--format", default=None, help="override format detection (see the list below)")
    inspect.add_argument("--task", default=None, help="tag every example with this task")
    inspect.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    from moe_roma.commands import add_data_source_options

    add_data_source_options(inspect)
    inspect.set_defaults(func=run_inspect)
    presets = actions.add_parser(
        "presets",
        help="list the column mappings for Hugging Face datasets",
        description="The presets that map hub datasets' columns to multiple-choice "
        "examples; each is detected from its columns or chosen with --preset.",
    )
    presets.set_defaults(func=run_presets)
    # `roma data` alone prints its help and exits 2, like `roma` alone.
    parser.set_defaults(func=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def inspect_path(
    path: str,
    format: str | None = None,
    task: str | None = None,
    preset: str | None = None,
    fields: Any = None,
) -> dict[str, Any]:
    """The report ``roma data inspect`` prints: format, whether it was detected, and the counts."""
    from moe_roma.data.hf_source import is_datasets_source

    if format is None and (preset or fields or is_datasets_source(path)):
        examples = load_examples(path, task=task, preset=preset, fields=fields)
        return {
            "path": str(path),
            "format": f"datasets[{examples[0].meta['preset']}]",
            "detected": preset is None and fields is None,
            **summarize_examples(examples),
        }
    name = normalize_format(format, path) if format is not None else detect_format(path)
    examples = load_examples(path, format=name, task=task)
    return {"path": str(path), "format": name, "detected": format is None, **summarize_examples(examples)}


def format_report(report: dict[str, Any]) -> str:
    """The human-readable form of an ``inspect_path`` report."""
    n = report["n_examples"]
    how = "detected" if report["detected"] else "given"
    lines = [f"{report['path']}: {report['format']} ({how}), {n} examples"]
    tasks = list(report["tasks"].items())
    shown = ", ".join(f"{name} {count}" for name, count in tasks[:TOP_TASKS])
    more = f", ... and {len(tasks) - TOP_TASKS} more" if len(tasks) > TOP_TASKS else ""
    lines.append(f"tasks ({len(tasks)}): {shown}{more}")
    lines.append("choices per question:")
    top = max(report["choice_histogram"].values(), default=1)
    for choices, count in report["choice_histogram"].items():
        bar = "#" * max(1, round(BAR_WIDTH * count / top))
        lines.append(f"  {choices:>2}: {count:>7}  {bar}")
    answers = ", ".join(f"{letter} {count}" for letter, count in report["answer_histogram"].items())
    lines.append(f"answers: {answers}")
    if report.get("n_repeated_choices"):
        lines.append(f"questions that list one choice twice: {report['n_repeated_choices']}")
    if report["n_continuation"]:
        lines.append(f"partial scoring (context options + continuation): {report['n_continuation']} examples")
    return "\n".join(lines)


def run_inspect(args: argparse.Namespace) -> int:
    from moe_roma.commands import data_source_options

    report = inspect_path(args.path, format=args.format, task=args.task, **data_source_options(args))
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else format_report(report))
    return 0


def run_presets(args: argparse.Namespace) -> int:
    from moe_roma.data.presets import PRESETS

    width = max(map(len, PRESETS))
    for preset in PRESETS.values():
        print(f"{preset.name.ljust(width)}  {', '.join(preset.hub_ids)}: {preset.description}")
    return 0
