"""The target test of a `roma diagnose` report, split into two groups of task families.

    python scripts/target_test_groups.py REPORT.json FAMILY[,FAMILY...]

Prints, for the named families and for the rest, the accuracy with the items' own routing and with
each target, and how many failed items each target fixes. Used on train_large (issue 28), whose 31,500
successful items come from 6 of in_dist's 12 families: an item of another family has no neighbour of
its own family there, so the two groups answer different questions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TARGETS = ("roma", "random", "same_task", "uniform")


def group_rows(per_task: dict[str, dict], families: list[str]) -> list[dict]:
    """One row per group (the named families, then the rest): n, own accuracy, and per target its
    accuracy and the failed items it fixes."""
    unknown = sorted(set(families) - set(per_task))
    if unknown:
        raise ValueError(f"families not in the report's target test: {', '.join(unknown)}")
    rest = [t for t in per_task if t not in families]
    rows = []
    for name, group in (("named", families), ("rest", rest)):
        n = sum(per_task[t]["n"] for t in group)
        if n == 0:
            continue
        row = {
            "group": name,
            "families": group,
            "n": n,
            "own": sum(per_task[t]["base"]["k"] for t in group) / n,
        }
        for target in TARGETS:
            cells = [per_task[t]["targets"][target] for t in group]
            row[target] = {
                "accuracy": sum(c["accuracy"]["k"] for c in cells) / n,
                "fixed": sum(c["fixed"]["k"] for c in cells),
                "failed": sum(c["fixed"]["n"] for c in cells),
            }
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    head = "| group | n | own | " + " | ".join(f"`{t}` (fixed of failed)" for t in TARGETS) + " |"
    lines = [head, "|" + "---|" * (3 + len(TARGETS))]
    for r in rows:
        cells = [f"{r[t]['accuracy']:.1%} ({r[t]['fixed']} of {r[t]['failed']})" for t in TARGETS]
        label = f"{r['group']}: {', '.join(r['families'])}"
        lines.append(f"| {label} | {r['n']} | {r['own']:.1%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = Path(argv[0])
    try:
        per_task = json.loads(path.read_text(encoding="utf-8"))["target_test"]["per_task"]
        rows = group_rows(per_task, [f for f in argv[1].split(",") if f])
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"error: {path}: {err}", file=sys.stderr)
        return 2
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
