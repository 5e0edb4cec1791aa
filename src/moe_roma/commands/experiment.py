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
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moe_roma.experiment import run_experiment

    run_experiment(args.config, args.out, progress=not args.no_progress)
    return 0
