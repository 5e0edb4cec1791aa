"""``roma experiment``: run a grid of methods, settings and seeds from a YAML file."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiment",
        help="run a comparison grid (base, router tuning, C3PO, RoMA, oracle, ablations) from YAML",
        description="Writes results.json, table.md (mean ± std over seeds) and accuracy.png. See configs/.",
    )
    p.add_argument("config", help="experiment YAML, e.g. configs/paper-table.yaml")
    p.add_argument("--out", default=None, help="output folder (default: runs/<name>)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is fastest for the testbed on a busy machine)")
    p.add_argument("--resume", action="store_true",
                   help="keep the method runs an interrupted run of the same grid into --out finished "
                   "(outcomes.jsonl) and run only the rest")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from moe_roma.experiments.grid import run_experiment
    from moe_roma.io.errors import RomaError

    if args.threads is not None:
        if args.threads < 1:
            raise RomaError("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    run_experiment(args.config, args.out, progress=not args.no_progress, resume=args.resume)
    return 0
