"""``roma lm-eval-task``: export data as an lm-evaluation-harness task that scores like ``roma eval``.

``roma lm-eval-task --data FILE --out DIR [--name NAME] [--scoring continuation|letter]`` writes
``DIR/NAME.yaml`` and ``DIR/NAME.jsonl``; then
``lm_eval --model hf --model_args pretrained=MODEL --include_path DIR --tasks NAME`` reports the
same ``acc`` and ``acc_norm`` as ``roma eval --model MODEL --data FILE``.
"""

from __future__ import annotations

import argparse

from moe_roma.commands import add_data_source_options, add_overwrite_option, add_template_option, at_least
from moe_roma.io.outputs import Kind
from moe_roma.scoring import DEFAULT_SCORING, SCORINGS

# A task folder holds many tasks side by side (lm_eval --include_path reads them all).
TASK_FOLDER = Kind("task folder", members=("*.yaml", "*.jsonl"), shelf=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lm-eval-task`` to the ``roma`` parser."""
    from moe_roma.data.loaders import describe_formats

    p = subparsers.add_parser(
        "lm-eval-task",
        help="write an lm-evaluation-harness task (YAML + JSONL) for multiple-choice data",
        description="Write an lm-evaluation-harness multiple_choice task whose prompts are rendered by "
        "roma's own templates, so that lm_eval and roma eval report the same acc and acc_norm.",
        epilog="data formats:\n" + describe_formats(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        required=True,
        help="multiple-choice data file, a folder of MMLU CSVs, hf:NAME[:CONFIG][:SPLIT], or a "
        "parquet/arrow file",
    )
    p.add_argument("--format", default=None, help="data format (default: detected; see the list below)")
    add_data_source_options(p)
    p.add_argument(
        "--out", required=True, help="folder for the task files (pass it to lm_eval --include_path)"
    )
    p.add_argument("--name", default=None, help="task name (default: roma_<data file stem>)")
    add_overwrite_option(p, "the task's files")
    p.add_argument("--scoring", default=DEFAULT_SCORING, choices=SCORINGS)
    add_template_option(p)
    p.add_argument("--limit", type=at_least(1), default=None, help="export only the first N examples")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moe_roma.eval.evaluate import check_template, load_eval_data
    from moe_roma.eval.lm_eval_bridge import (
        check_task_name,
        default_task_name,
        task_files,
        write_lm_eval_task,
    )
    from moe_roma.io.outputs import guard_output

    name = check_task_name(args.name) if args.name else default_task_name(args.data)
    files = task_files(args.out, name)
    guard_output(
        "--out", args.out, TASK_FOLDER, inputs={"--data": args.data}, files=files, overwrite=args.overwrite
    )
    from moe_roma.commands import data_source_options

    examples, _ = load_eval_data(args.data, args.format, args.limit, **data_source_options(args))
    check_template(args.template, args.scoring, examples[0])
    exported = write_lm_eval_task(examples, args.out, name, scoring=args.scoring, template=args.template)
    for path in exported.yaml_files + exported.data_files:
        print(f"wrote {path}")
    print(f"{exported.n} examples in task {exported.name}; run:")
    print(f"  {exported.command()}")
    return 0
