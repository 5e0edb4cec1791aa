"""``roma experiment``: run a grid of methods, settings and seeds from a YAML file."""

from __future__ import annotations

import argparse

from moe_roma.commands import add_report_to_option, add_threads_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiment",
        help="run a comparison grid (base, router tuning, C3PO, RoMA, oracle, ablations) from YAML",
        description="Writes results.json, table.md (mean ± std over seeds) and accuracy.png. See configs/.",
    )
    p.add_argument("config", help="experiment YAML, e.g. configs/paper-table.yaml")
    p.add_argument("--out", default=None, help="output folder (default: runs/<name>)")
    add_threads_option(p)
    p.add_argument("--resume", action="store_true",
                   help="keep the method runs an interrupted run of the same grid into --out finished "
                   "(outcomes.jsonl) and run only the rest")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--dry-run", action="store_true",
                   help="check the file (settings, methods, data sources and presets, local files) and print every "
                   "step it would run, without loading a model or reading data")  # fmt: skip
    add_report_to_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moe_roma.commands import apply_threads
    from moe_roma.experiments.grid import plan_experiment, run_experiment
    from moe_roma.io.paths import guard_outputs

    if args.dry_run:
        for line in plan_experiment(args.config, args.out, args.report_to):
            print(line)
        print("dry run: the configuration is valid; nothing was loaded or written")
        return 0
    apply_threads(args.threads)
    guard_outputs({"the experiment file": args.config}, {"--out": args.out})
    run_experiment(args.config, args.out, progress=not args.no_progress, resume=args.resume, report_to=args.report_to)
    return 0
