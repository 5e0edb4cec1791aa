"""``roma demo``: the whole method on the bundled testbed model."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run collect -> neighbours -> RoMA training -> evaluation on the bundled tiny MoE",
        description="Compare base, router_tuning and roma on the testbed's in_dist, shifted and "
        "heldout_tasks splits; writes results.json, report.md and PNG plots.",
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished demo in --out (the old one stays until the new one is complete)",
    )
    p.add_argument(
        "--testbed",
        choices=["in-domain", "downstream"],
        default=None,
        help="which bundled testbed (default: downstream, configs/demo.yaml; in-domain reads "
        "configs/demo-in-domain.yaml)",
    )
    p.add_argument(
        "--seeds", default="0", help="comma-separated training seeds (default: 0, as the demo files)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the testbed's small matrices gain nothing from more, and "
        "on busy cores two threads were measured 3x slower than one)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="change a training setting (dotted name) for both trained methods, e.g. optimizer.lr=0.001",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from moe_roma.experiments.comparison import RESULTS_FOLDER
    from moe_roma.experiments.demo import run_demo
    from moe_roma.io.errors import RomaError
    from moe_roma.io.outputs import guard_output

    if args.threads < 1:
        raise RomaError("--threads must be at least 1")
    torch.set_num_threads(args.threads)

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise RomaError(f"--seeds {args.seeds!r} is not a comma-separated list of integers") from None
    output = guard_output("--out", args.out, RESULTS_FOLDER, overwrite=args.overwrite)
    options = {
        "seeds": seeds,
        "overrides": args.overrides,
        "progress": not args.no_progress,
        "testbed": args.testbed,
    }
    if not output.replaces:
        run_demo(output.path, **options)
        return 0
    with output.staged() as staging:  # the finished demo stays until the new one is complete
        run_demo(staging, **options)
    return 0
