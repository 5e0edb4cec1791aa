"""Aggregate result rows over seeds into tables."""

from __future__ import annotations

import statistics
from collections import defaultdict


def aggregate(rows: list[dict], keys: tuple[str, ...] = ("method", "split")) -> dict[tuple, dict]:
    """Mean, standard deviation and per-seed values of ``accuracy`` for each group of ``keys``."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row.get(k) for k in keys)].append(row)
    out = {}
    for key, items in groups.items():
        accs = [r["accuracy"] for r in items if r["accuracy"] is not None]
        out[key] = {
            "mean": statistics.fmean(accs) if accs else None,
            "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "n_seeds": len(accs),
            "values": accs,
            "n": items[0]["n"],
            "ci": items[0].get("ci") if len(items) == 1 else None,
        }
    return out


def _cell(stats: dict | None) -> str:
    if not stats or stats["mean"] is None:
        return "-"
    if stats["n_seeds"] > 1:
        return f"{stats['mean']:.1%} ± {stats['std']:.1%}"
    ci = stats.get("ci")
    return f"{stats['mean']:.1%} [{ci[0]:.1%}, {ci[1]:.1%}]" if ci else f"{stats['mean']:.1%}"


def markdown_table(rows: list[dict], methods: list[str], splits: list[str]) -> str:
    """Methods as rows, splits as columns; mean ± std over seeds (or the 95% interval for one seed)."""
    agg = aggregate(rows)
    n_seeds = max((a["n_seeds"] for a in agg.values()), default=1)
    head = (
        "| method | "
        + " | ".join(f"{s} (n={agg.get((methods[0], s), {}).get('n', '?')})" for s in splits)
        + " |"
    )
    lines = [head, "|" + "---|" * (len(splits) + 1)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(_cell(agg.get((m, s))) for s in splits) + " |")
    note = (
        f"Accuracy, mean ± standard deviation over {n_seeds} seeds."
        if n_seeds > 1
        else "Accuracy with its 95% Wilson interval."
    )
    return "\n".join(lines) + "\n\n" + note + "\n"


def console_table(rows: list[dict], methods: list[str], splits: list[str]) -> str:
    agg = aggregate(rows)
    width = max(len(m) for m in methods) + 2
    cols = [max(len(s), 24) for s in splits]
    out = ["method".ljust(width) + "".join(s.ljust(c + 2) for s, c in zip(splits, cols))]
    for m in methods:
        out.append(
            m.ljust(width) + "".join(_cell(agg.get((m, s))).ljust(c + 2) for s, c in zip(splits, cols))
        )
    return "\n".join(out)
