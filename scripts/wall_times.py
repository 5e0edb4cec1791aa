"""Training wall time of each method of `roma experiment` folders, from their ``outcomes.jsonl``.

    python scripts/wall_times.py results/sweep-downstream-large results/compare-downstream-large

Each trained run records the seconds its training took (``outcome.train.seconds``); a run resumed
from its saved state records only the time since its last resume. Evaluation is not included. A
folder without ``outcomes.jsonl`` is one sentence and exit status 2.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from moe_roma.io.jsonl import read_records


def wall_times(folder: Path) -> dict[str, list[float]]:
    """Training seconds of each finished trained run, by method; the last record of a run wins."""
    runs = {
        r["run"]: r["outcome"].get("train", {}).get("seconds")
        for r in read_records(folder / "outcomes.jsonl")
    }
    by_method: dict[str, list[float]] = defaultdict(list)
    for run, seconds in runs.items():
        if seconds is not None:
            by_method[run.rsplit("/seed", 1)[0]].append(seconds)
    return dict(by_method)


def main(folders: list[str]) -> int:
    for folder in map(Path, folders):
        if not (folder / "outcomes.jsonl").is_file():
            print(f"wall_times.py: {folder / 'outcomes.jsonl'} does not exist", file=sys.stderr)
            return 2
        by_method = wall_times(folder)
        every = [s for runs in by_method.values() for s in runs]
        if not every:
            print(f"{folder}: no trained run has finished")
            continue
        print(
            f"{folder}: {len(every)} trained runs, {min(every):.0f}-{max(every):.0f} s each, "
            f"{sum(every) / 3600:.1f} h in all"
        )
        for method, runs in by_method.items():
            print(
                f"  {method}: {len(runs)} runs, {min(runs):.0f}-{max(runs):.0f} s, "
                f"mean {sum(runs) / len(runs):.0f} s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]) if len(sys.argv) > 1 else (print(__doc__, file=sys.stderr) or 2))
