"""Accuracy per task family of an experiment folder, from its ``outcomes.jsonl``: the section that
``roma experiment`` writes into ``table.md``, for a folder still running or written before the
section existed.

    python scripts/per_task.py results/compare-downstream-large [--splits heldout_tasks,shifted]

Each method's accuracy on a family is its mean over the runs finished so far; how many that is, per
method, is printed first. A folder without ``outcomes.jsonl`` is one sentence and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from moe_roma.experiments.grid import per_task_accuracy
from moe_roma.io.jsonl import read_records
from moe_roma.report.experiments import per_task_section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path, help="a `roma experiment` output folder")
    parser.add_argument("--splits", help="comma-separated splits (default: every split of the runs)")
    args = parser.parse_args(argv)
    path = args.folder / "outcomes.jsonl"
    records = read_records(path)
    if not records:
        print(f"per_task.py: {path} holds no finished run (run the experiment first)", file=sys.stderr)
        return 2
    # The last record of a run wins, as in `roma experiment --resume`.
    details = {r["run"]: r["outcome"] for r in records}
    methods = list(dict.fromkeys(run.rsplit("/seed", 1)[0] for run in details))
    splits = (
        args.splits.split(",")
        if args.splits
        else list(dict.fromkeys(split for outcome in details.values() for split in outcome.get("splits", {})))
    )
    runs = Counter(run.rsplit("/seed", 1)[0] for run in details)
    print("runs per method: " + ", ".join(f"{m} {runs[m]}" for m in methods) + "\n")
    print("\n".join(per_task_section(per_task_accuracy(details, methods, splits))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
