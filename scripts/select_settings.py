"""Each method family's best setting on the validation split of a sweep (roma experiment results.json).

    python scripts/select_settings.py results/sweep-downstream/results.json

A family is the method name before ``[``: ``roma[lr=3e-3,lam=0.2]`` belongs to ``roma``. The best
setting has the highest validation accuracy; ties go to the one listed first in the sweep file.
It prints one line per family (accuracy, n, the setting) and the number of settings each family
was given, so that the search budget can be reported beside the choice.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def best_settings(rows: list[dict], split: str = "validation") -> dict[str, dict]:
    families: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["split"] == split:
            families[row["method"].split("[")[0]].append(row)
    out = {}
    for family, candidates in families.items():
        best = max(candidates, key=lambda r: r["accuracy"])  # max keeps the first of equal ones
        out[family] = {
            "method": best["method"],
            "accuracy": best["accuracy"],
            "n": best["n"],
            "setting": best.get("setting", {}),
            "budget": len(candidates),
        }
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    path = Path(argv[0])
    if path.is_dir():  # the sweep's output folder
        path = path / "results.json"
    with open(path, encoding="utf-8") as handle:
        rows = json.load(handle)["rows"]
    for family, best in best_settings(rows).items():
        print(
            f"{family:16s} {best['accuracy']:.1%} (n={best['n']}, {best['budget']} settings tried): "
            f"{best['method']} {json.dumps(best['setting'])}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
