"""``roma experiment``: run a grid of methods, settings and seeds from a YAML file."""

from __future__ import annotations

import argparse

from moe_roma.commands import (
    add_overwrite_option,
    add_report_to_option,
    add_threads_option,
    add_trust_remote_code_option,
    at_least,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiment",
        help="run a comparison grid (base, router tuning, C3PO, RoMA, oracle, ablations) from YAML",
        description="Writes results.json, table.md (mean ± std over seeds) and accuracy.png. See configs/.",
    )
    p.add_argument("config", help="experiment YAML, e.g. configs/paper-table.yaml")
    p.add_argument("--out", default=None, help="output folder (default: runs/<name>)")
    add_threads_option(p)
    p.add_argument(
        "--workers",
        type=at_least(1),
        default=1,
        metavar="N",
        help="method runs at once, each in its own process with --threads torch threads and its own copy "
        "of the model (default 1); on a CPU, N workers of one thread each finish a grid of small-model "
        "runs about N times sooner on N free cores. The results are those of one worker",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the method runs an interrupted run of the same grid into --out finished "
        "(outcomes.jsonl) and run only the rest; a finished grid given more methods or seeds keeps its "
        "runs too, and its summary is rewritten at the end",
    )
    add_overwrite_option(p, "a finished grid in --out")
    add_trust_remote_code_option(p)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the file (settings, methods, data sources and presets, local files) and print every "
        "step it would run, without loading a model or reading data",
    )
    add_report_to_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moe_roma.commands import apply_threads
    from moe_roma.experiments.comparison import RESULTS_FOLDER
    from moe_roma.experiments.grid import (
        adds_to_finished_grid,
        output_folder,
        plan,
        read_experiment,
        run_experiment,
    )
    from moe_roma.io.errors import RomaError
    from moe_roma.io.outputs import guard_output

    if args.resume and args.overwrite:
        raise RomaError(
            "--resume and --overwrite contradict each other: finish the grid in --out, or replace it"
        )
    cfg = read_experiment(args.config)  # read once, and checked whole
    # The dry run checks the output folder as the real run does (it only reads).
    out = output_folder(cfg, args.out)
    extend = args.resume and adds_to_finished_grid(cfg, out)
    output = guard_output(
        "--out",
        out,
        RESULTS_FOLDER,
        inputs={"the experiment file": args.config},
        overwrite=args.overwrite,
        resume=args.resume,
        extend=extend,
    )
    if extend:
        print(
            f"--resume: {out} holds a finished grid of another experiment file; its finished runs are "
            "kept, the rest run, and its summary is rewritten when they finish"
        )
    if args.dry_run:
        for line in plan(cfg, args.out, args.report_to, args.trust_remote_code, args.workers):
            print(line)
        print("dry run: the configuration is valid; nothing was loaded or written")
        return 0
    apply_threads(args.threads)
    options = {
        "progress": not args.no_progress,
        "resume": args.resume,
        "report_to": args.report_to,
        "trust_remote_code": args.trust_remote_code,
        "workers": args.workers,
    }
    if not output.replaces:
        run_experiment(cfg, output.path, **options)
        return 0
    with output.staged() as staging:  # the finished grid stays until the new one is complete
        run_experiment(cfg, staging, **options)
    print(f"replaced {output.path} with the new results")
    return 0
