"""``table.md`` of the pre-training study's grid (``experiments/pretraining_study.py``): its rows, plainly."""

from __future__ import annotations

import json
from pathlib import Path


def _cell(cell: dict, fmt: str) -> str:
    """Mean ± sd over seeds (the mean alone for one seed; - for none)."""
    if cell["mean"] is None:
        return "-"
    return (
        f"{cell['mean']:{fmt}} ± {cell['sd']:{fmt}}" if len(cell["values"]) > 1 else f"{cell['mean']:{fmt}}"
    )


def _acc(cell: dict) -> str:
    return _cell(cell, ".1%")


def _num(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def rows_of(results: list[dict], splits: list[str]) -> list[dict]:
    """Result rows as ``report.tables`` reads them: method = ``arch/setting``, one row per split and seed."""
    return [
        {
            "method": f"{r['arch']}/{r['setting']}",
            "split": s,
            "seed": r["seed"],
            "accuracy": r["accuracy"][s],
            "n": r["n"][s],
        }
        for r in results
        for s in splits
    ]


def pretraining_study_report(
    cfg: dict, summary: list[dict], splits: list[str], seconds: float, config_path: str
) -> str:
    """The accuracy table (mean ± sd over seeds), CTGI, routing health, parameters and tokens/s per arch."""
    n_seeds = max((len(r["seeds"]) for r in summary), default=1)
    head = (
        "| architecture | setting | "
        + " | ".join(splits)
        + " | CTGI | entropy / log E | top-k share max / min "
        "| parameters total / active |"
    )
    lines = [
        f"# {cfg.get('name', 'architectures')}",
        "",
        f"`roma experiment {config_path}`: {len(summary)} rows, {n_seeds} seeds each, {seconds:.0f} s.",
        "Build settings shared by every run: `" + json.dumps(cfg.get("build") or {}, sort_keys=True) + "`.",
        "",
        head,
        "|" + "---|" * (len(splits) + 6),
    ]
    for r in summary:
        util = (
            "-"
            if r["utilisation_max"] is None
            else f"{r['utilisation_max']:.2f} / {r['utilisation_min']:.2f}"
        )
        lines.append(
            f"| {r['arch']} | {r['setting']} | "
            + " | ".join(_acc(r["accuracy"][s]) for s in splits)
            + f" | {_num(r['ctgi'], '.2f')} | {_num(r.get('entropy_norm'), '.3f')} | {util} | "
            f"{r['parameters'] / 1e6:.2f}M / {r['active_parameters'] / 1e6:.2f}M |"
        )
    lines += [
        "",
        f"Accuracy: mean ± standard deviation over {n_seeds} seeds. CTGI: the setting's gain on "
        "heldout_tasks over its gain on in_dist, both against the same architecture's "
        f"`{cfg.get('reference', 'none')}` row (- when the in_dist gain is not positive). Entropy and top-k "
        "shares: the routing of the last logged batch, averaged over MoE layers and seeds; entropy is over "
        "log E, so 1 is uniform routing (top-k share: the largest and smallest share of top-k slots any "
        "expert took).",
        "",
    ]
    lines += _ablation_table(summary, splits, str(cfg.get("reference", "none")))
    lines += _continuous_table(summary, splits)
    lines += _throughput_table(summary)
    warned = [r for r in summary if r["collapse_warnings"]]
    lines += ["", "## Collapse warnings", ""]
    lines += [
        f"- {r['arch']}/{r['setting']}: {r['collapse_warnings']} (see the runs' metrics.jsonl)"
        for r in warned
    ] or ["- none"]
    return "\n".join(lines) + "\n"


def _throughput_table(summary: list[dict]) -> list[str]:
    """Mean tokens/s per architecture over its runs, and the tokens one run trained on."""
    lines = ["## Throughput", "", "| architecture | tokens/s | tokens per run |", "|---|---|---|"]
    per_arch: dict[str, list[dict]] = {}
    for r in summary:
        per_arch.setdefault(r["arch"], []).append(r)
    for arch, rows in per_arch.items():
        tps = [r["tokens_per_second"] for r in rows if r["tokens_per_second"] is not None]
        lines.append(
            f"| {arch} | {sum(tps) / len(tps):,.0f} | {rows[0]['tokens']:,} |"
            if tps
            else f"| {arch} | - | - |"
        )
    return lines


def _cont(cell: dict) -> str:
    return _cell(cell, ".3f")


def _continuous_table(summary: list[dict], splits: list[str]) -> list[str]:
    """Choice cross-entropy per split and the last training loss: they move before accuracy does."""
    lines = [
        "## Continuous scores",
        "",
        "| architecture | setting | "
        + " | ".join(f"{s} choice x-ent" for s in splits)
        + " | "
        + " | ".join(f"{s} answer NLL" for s in splits)
        + " | training loss |",
        "|" + "---|" * (2 * len(splits) + 3),
    ]
    for r in summary:
        if "choice_xent" not in r:
            continue
        lines.append(
            f"| {r['arch']} | {r['setting']} | "
            + " | ".join(_cont(r["choice_xent"][s]) for s in splits)
            + " | "
            + " | ".join(_cont(r["answer_nll"][s]) for s in splits)
            + f" | {_cont(r['loss'])} |"
        )
    return lines + [
        "",
        "Choice x-ent: the mean cross-entropy of the right choice under a softmax over the four "
        "choices' log-probabilities (chance: ln 4 = 1.386; lower is better). Answer NLL: the mean negative "
        "log-probability of the right answer's tokens. Training loss: the last logged batch. Mean ± sd "
        "over seeds.",
        "",
    ]


def plot_curves(curves: dict[tuple[str, str], list[list[dict]]], out: Path) -> Path:
    """Training loss and routing entropy over steps: one column per architecture, one line per setting
    (the mean over seeds). ``curves[(arch, setting)]`` holds each seed's ``metrics.jsonl`` records.
    Entropy is divided by log E, so 1 is uniform routing whatever the expert count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = list(dict.fromkeys(a for a, _ in curves))
    settings = list(dict.fromkeys(s for _, s in curves))
    colours = {s: f"C{i}" for i, s in enumerate(settings)}
    fig, axes = plt.subplots(2, len(archs), figsize=(2.6 * len(archs), 5), squeeze=False, sharex=True)
    for col, arch in enumerate(archs):
        loss_ax, ent_ax = axes[0][col], axes[1][col]
        loss_ax.set_title(arch, fontsize=9)
        for setting in settings:
            seeds = curves.get((arch, setting))
            if not seeds:
                continue
            steps, loss, entropy = _mean_curve(seeds)
            loss_ax.plot(steps, loss, color=colours[setting], label=setting, lw=1.2)
            if any(e is not None for e in entropy):
                ent_ax.plot(steps, entropy, color=colours[setting], label=setting, lw=1.2)
        ent_ax.set_ylim(0, 1.05)
        ent_ax.set_xlabel("step", fontsize=8)
        for ax in (loss_ax, ent_ax):
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("training loss", fontsize=8)
    axes[1][0].set_ylabel("routing entropy / log E", fontsize=8)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _mean_curve(seeds: list[list[dict]]) -> tuple[list[int], list[float], list[float | None]]:
    """Steps logged by every seed, with the seeds' mean loss and mean ``entropy_norm`` at each."""
    import statistics

    by_step: dict[int, list[dict]] = {}
    for records in seeds:
        for r in records:
            by_step.setdefault(r["step"], []).append(r)
    steps = sorted(k for k, v in by_step.items() if len(v) == len(seeds))
    loss = [statistics.fmean(r["loss"] for r in by_step[k]) for k in steps]
    entropy: list[float | None] = []
    for k in steps:
        vals = [r["entropy_norm"] for r in by_step[k] if r.get("entropy_norm") is not None]
        entropy.append(statistics.fmean(vals) if vals else None)
    return steps, loss, entropy


_ABLATION_COLUMNS = (("accuracy", "Δ {s} acc", 100, "+.1f"), ("choice_xent", "Δ {s} x-ent", 1, "+.3f"))


def _delta(cell: dict | None, scale: float, fmt: str) -> str:
    if not cell or cell["mean"] is None:
        return "-"
    seeds = ", ".join(format(scale * v, fmt) for _, v in sorted(cell["by_seed"].items()))
    return f"{format(scale * cell['mean'], fmt)} ({seeds})"


def _ablation_table(summary: list[dict], splits: list[str], reference: str) -> list[str]:
    """Each setting minus the same architecture's reference row at the same seed: the roadmap's ablation."""
    rows = [r for r in summary if r.get("delta")]
    if not rows:
        return []
    heads = [h.format(s=s) for key, h, _, _ in _ABLATION_COLUMNS for s in splits]
    heads += ["Δ entropy / log E", "Δ top-k max share", "Δ training loss"]
    lines = [
        f"## Ablation: each setting minus `{reference}`, seed by seed",
        "",
        "| architecture | setting | " + " | ".join(heads) + " |",
        "|" + "---|" * (len(heads) + 2),
    ]
    for r in rows:
        d = r["delta"]
        cells = [
            _delta(d.get(f"{key}:{s}"), scale, fmt)
            for key, _, scale, fmt in _ABLATION_COLUMNS
            for s in splits
        ]
        cells += [
            _delta(d.get("entropy_norm"), 1, "+.3f"),
            _delta(d.get("utilisation_max"), 1, "+.3f"),
            _delta(d.get("loss"), 1, "+.3f"),
        ]
        lines.append(f"| {r['arch']} | {r['setting']} | " + " | ".join(cells) + " |")
    return lines + [
        "",
        "Each cell: the mean difference over seeds, then each seed's difference in brackets "
        "(accuracy in points; a negative x-ent or loss difference is better). With 360 / 360 / 320 "
        "items, one seed's accuracy difference within about ±6 points is noise.",
        "",
    ]
