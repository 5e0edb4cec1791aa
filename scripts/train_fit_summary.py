"""Mean over seeds of each trained method's accuracy on its own training set (scripts/findings_downstream.sh).

python scripts/train_fit_summary.py /tmp/findings-downstream
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def main(folder: str) -> int:
    runs: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(Path(folder).glob("train-*-*.json")):
        method = path.stem.split("-", 1)[1].rsplit("-", 1)[0]
        runs[method].append(json.loads(path.read_text()))
    if not runs:
        print(f"{folder}: no train-<method>-<seed>.json files", file=sys.stderr)
        return 2
    print("| method | seeds | base on train | tuned on train | fixed | broke |\n|---|---|---|---|---|---|")
    for method, reports in runs.items():
        base = statistics.mean(r["base"]["acc"] for r in reports)
        tuned = statistics.mean(r["acc"] for r in reports)
        sd = statistics.stdev(r["acc"] for r in reports) if len(reports) > 1 else 0.0
        fixed = statistics.mean(r["comparison"]["acc"]["only_tuned_correct"] for r in reports)
        broke = statistics.mean(r["comparison"]["acc"]["only_base_correct"] for r in reports)
        print(
            f"| {method} | {len(reports)} | {base:.1%} | {tuned:.1%} ± {sd:.1%} | {fixed:.1f} | {broke:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]) if len(sys.argv) == 2 else (print(__doc__, file=sys.stderr) or 2))
