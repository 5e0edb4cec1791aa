"""Markdown reports and figures of experiment grids and the demo (what ``roma experiment`` and
``roma demo`` write next to their ``results.json``)."""

from __future__ import annotations

import json
from pathlib import Path

from moe_roma import __version__
from moe_roma.report.tables import aggregate, markdown_table


def experiment_report(
    cfg: dict,
    table: str,
    metrics: dict,
    ctgi: dict,
    seconds: float,
    config_path: str,
    paired: list | None = None,
    intervals: dict | None = None,
    tasks: dict | None = None,
) -> str:
    """``table.md`` of ``roma experiment``: the accuracy table, its intervals and paired tests, CTGI,
    accuracy per task family, routing metrics, the plot."""
    lines = [
        f"# {cfg.get('name', 'experiment')}",
        "",
        f"Produced by `roma experiment {config_path}` (moe-roma {__version__}) in {seconds:.0f} s.",
        "",
        table,
    ]
    if intervals and len(cfg.get("seeds", [0])) > 1:
        lines += _intervals_section(intervals)
    if paired:
        lines += _paired_section(paired)
    if ctgi:
        lines += _ctgi_section(ctgi)
    if tasks:
        lines += per_task_section(tasks)
    if metrics:
        lines += _metrics_section(metrics)
    lines += ["![accuracy](accuracy.png)", ""]
    return "\n".join(lines)


def _intervals_section(intervals: dict) -> list[str]:
    lines = [
        "## 95% intervals of the mean over seeds",
        "",
        "Student-t intervals over the seeds; seed-free methods (base, C3PO, oracle) do not vary.",
        "",
        "| method / split | mean | 95% interval |",
        "|---|---|---|",
    ]
    for key, v in intervals.items():
        ci = "-" if not v["ci"] else f"[{v['ci'][0]:.1%}, {v['ci'][1]:.1%}]"
        lines.append(f"| {key} | {v['mean']:.1%} | {ci} |")
    return [*lines, ""]


def _paired_section(paired: list) -> list[str]:
    lines = [
        "## Paired tests",
        "",
        "A minus B on the same items: mean accuracy difference over seeds with its 95% t-interval, and the "
        "exact McNemar p-value of each seed (seeds are not pooled).",
        "",
        "| A vs B | split | mean difference | 95% interval | McNemar p per seed | seeds with p < 0.05 |",
        "|---|---|---|---|---|---|",
    ]
    for t in paired:
        if t["mean_diff"] is None:
            continue
        ci = "-" if not t["ci"] else f"[{t['ci'][0]:+.1%}, {t['ci'][1]:+.1%}]"
        ps = ", ".join(f"{x['p_value']:.3g}" for x in t["per_seed"])
        lines.append(
            f"| {t['a']} vs {t['b']} | {t['split']} | {t['mean_diff']:+.1%} | {ci} | {ps} | "
            f"{t['n_significant']} of {len(t['per_seed'])} |"
        )
    return [*lines, ""]


def _ctgi_section(ctgi: dict) -> list[str]:
    lines = [
        "## Cross-task generalisation index",
        "",
        "Gain over base on held-out task families divided by the gain on the trained families "
        "(in_dist), seed means; undefined when the in-distribution gain is not positive.",
        "",
        "| method | gain in_dist | gain heldout_tasks | CTGI |",
        "|---|---|---|---|",
    ]
    for m, v in ctgi.items():
        c = "-" if v["ctgi"] is None else f"{v['ctgi']:.2f}"
        go = "-" if v["gain_heldout"] is None else f"{v['gain_heldout']:+.1%}"
        lines.append(f"| {m} | {v['gain_in_dist']:+.1%} | {go} | {c} |")
    return [*lines, ""]


def per_task_section(tasks: dict) -> list[str]:
    """The "Accuracy per task family" section of ``table.md``: one table per split, a row per family."""
    lines = [
        "## Accuracy per task family",
        "",
        "Each method's accuracy on the items of one task family, mean over seeds: where a split's "
        "difference between methods comes from.",
        "",
    ]
    for split, per_task in tasks.items():
        methods = list(next(iter(per_task.values())))
        lines += [
            f"### {split}",
            "",
            "| task | " + " | ".join(methods) + " |",
            "|---" * (len(methods) + 1) + "|",
        ]
        for task, accs in per_task.items():
            cells = ("-" if accs.get(m) is None else f"{accs[m]:.1%}" for m in methods)
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _metrics_section(metrics: dict) -> list[str]:
    lines = [
        "## Routing metrics (first evaluation split)",
        "",
        "`knn_overlap@5`: share of each item's 5 nearest neighbours in sentence-embedding space that are "
        "also its 5 nearest in routing space; `cka`: linear CKA between embeddings and routing vectors; "
        "entropy in nats per tuned layer; utilisation: min/max share of top-k slots per layer.",
        "",
        "| run | knn_overlap@5 | cka | entropy | utilisation min..max |",
        "|---|---|---|---|---|",
    ]
    for key, m in metrics.items():
        ent = ", ".join(f"{h:.2f}" for h in m["entropy"])
        util = ", ".join(f"{a:.2f}..{b:.2f}" for a, b in zip(m["utilisation_min"], m["utilisation_max"]))
        lines.append(f"| {key} | {m['knn_overlap@5']:.3f} | {m['cka']:.3f} | {ent} | {util} |")
    return [*lines, ""]


def plot_accuracy(rows: list[dict], methods: list[str], splits: list[str], out: Path) -> Path:
    """Bar chart of each method's mean accuracy per split, with the standard deviation over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    agg = aggregate(rows)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(methods) * len(splits) / 2), 4))
    width = 0.8 / len(methods)
    x = np.arange(len(splits))
    for i, m in enumerate(methods):
        means = [agg.get((m, s), {}).get("mean") or 0 for s in splits]
        stds = [agg.get((m, s), {}).get("std") or 0 for s in splits]
        ax.bar(x + i * width - 0.4 + width / 2, means, width, yerr=stds, capsize=2, label=m)
    ax.set_xticks(x, splits)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def demo_report(
    rows: list[dict], meta: dict, alignment: dict, methods: list[str], splits: list[str], seconds: float
) -> str:
    """``report.md`` of ``roma demo``."""
    lines = [
        "# RoMA demo on the bundled testbed",
        "",
        f"Produced by `roma demo` (moe-roma {__version__}) in {seconds:.0f} s. Base model answers "
        f"{meta['base_train_accuracy']:.1%} of the {meta['n_train']} RoMA training items right (successful "
        f"set: {meta['n_successful']}). Scoring: {meta['scoring']} (lm-evaluation-harness `acc`).",
        "",
        markdown_table(rows, methods, splits),
        "## Manifold alignment on in_dist (first seed)",
        "",
        "`knn_overlap@5`: mean share of each item's 5 nearest neighbours in the sentence-embedding space "
        "that are also among its 5 nearest in routing space (tuned layers concatenated); chance is about "
        f"{5 / max(meta['splits'].get('in_dist', 6) - 1, 1):.3f}.",
        "",
        "| routing | knn_overlap@5 | mean routing entropy per tuned layer (nats) |",
        "|---|---|---|",
    ]
    for label, a in alignment.items():
        lines.append(
            f"| {label} | {a['knn_overlap@5']:.3f} | {', '.join(f'{h:.2f}' for h in a['entropy'])} |"
        )
    lines += [
        "",
        "## Plots",
        "",
        "![training curves](training_curves.png)",
        "![expert utilisation](expert_utilisation.png)",
        "![routing PCA](routing_pca.png)",
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(meta["train_config"], indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)
