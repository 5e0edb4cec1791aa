"""``roma eval``: accuracy of a model (base, or with tuned routers) on multiple-choice data.

``roma eval --model M --data FILE [--routers DIR [--compare-base]] [--scoring continuation|letter]
[--json OUT]`` prints one summary line per model (acc with a 95% interval, acc_norm for
continuation scoring, examples/s), per-task figures, items that could not be used as intended,
and with ``--compare-base`` the paired difference with its interval and McNemar p-value.
"""

from __future__ import annotations

import argparse

from moe_roma.commands import (
    add_data_source_options,
    add_distributed_options,
    add_model_options,
    add_overwrite_option,
    add_template_option,
    add_threads_option,
    at_least,
)
from moe_roma.scoring import DEFAULT_SCORING, SCORINGS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval`` to the ``roma`` parser."""
    from moe_roma.data.loaders import describe_formats

    p = subparsers.add_parser(
        "eval",
        help="evaluate a model, base or with tuned routers, on multiple-choice data",
        description="Score multiple-choice data with a model (and optionally its tuned routers). "
        "'continuation' scoring is lm-evaluation-harness's multiple_choice (acc and acc_norm); "
        "'letter' compares the next-token log-probabilities of the answer letters.",
        epilog="data formats:\n" + describe_formats(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="Hugging Face model id or local folder (the base model)")
    p.add_argument("--routers", default=None, help="router checkpoint folder to load into the base model")
    p.add_argument(
        "--data",
        required=True,
        help="multiple-choice data file, a folder of MMLU CSVs, hf:NAME[:CONFIG][:SPLIT], or a "
        "parquet/arrow file",
    )
    # Not argparse `choices`: an unknown format fails like any other bad input, listing the formats.
    p.add_argument("--format", default=None, help="data format (default: detected; see the list below)")
    add_data_source_options(p)
    p.add_argument("--scoring", default=DEFAULT_SCORING, choices=SCORINGS)
    add_template_option(p)
    p.add_argument("--batch-size", type=at_least(1), default=8)
    p.add_argument("--limit", type=at_least(1), default=None, help="score only the first N examples")
    p.add_argument(
        "--max-length", type=at_least(1), default=None, help="tokens (default: the model's context length)"
    )
    add_model_options(p)
    add_threads_option(p)
    add_distributed_options(p)
    p.add_argument("--compare-base", action="store_true", help="also evaluate the base model and compare")
    p.add_argument("--json", default=None, metavar="OUT", help="write the full report as JSON")
    p.add_argument("--predictions", default=None, metavar="OUT", help="write per-item predictions as JSONL")
    add_overwrite_option(p, "--json and --predictions")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moe_roma.commands import apply_threads, distributed_settings
    from moe_roma.distributed.group import check_device_map, job, local_device
    from moe_roma.eval.evaluate import run_eval, write_report
    from moe_roma.io.outputs import guard_output
    from moe_roma.io.paths import local_path

    apply_threads(args.threads)
    inputs = {"--data": args.data, "--model": local_path(args.model), "--routers": args.routers}
    outputs = {"--json": args.json, "--predictions": args.predictions}
    for option, path in outputs.items():
        if path is not None:
            others = {k: v for k, v in outputs.items() if k != option}
            guard_output(option, path, inputs=inputs, others=others, overwrite=args.overwrite)
    with job(args.dist_timeout, distributed_settings(args)) as (rank, world):
        # Under torchrun each process scores its share of the items on its own GPU (LOCAL_RANK).
        check_device_map(args.device_map)
        device = args.device if args.device is not None or world == 1 else str(local_device())
        report = run_eval(_config(args, device))
    if rank != 0:
        return 0  # rank 0 holds every process's items and writes the one report
    # Files first: a closed stdout (``| head``) must not cost the results.
    write_report(report, args.json, args.predictions)
    for line in report.lines():
        print(line)
    for path in (args.json, args.predictions):
        if path:
            print(f"wrote {path}")
    return 0


def _config(args: argparse.Namespace, device: str | None):
    from moe_roma.commands import data_source_options
    from moe_roma.eval.evaluate import EvalConfig

    return EvalConfig(
        model=args.model,
        data=args.data,
        routers=args.routers,
        format=args.format,
        scoring=args.scoring,
        batch_size=args.batch_size,
        limit=args.limit,
        max_length=args.max_length,
        template=args.template,
        dtype=args.dtype,
        device=device,
        device_map=args.device_map,
        attn_implementation=args.attn_implementation,
        compare_base=args.compare_base,
        progress=not args.no_progress,
        trust_remote_code=args.trust_remote_code,
        **data_source_options(args),
    )
