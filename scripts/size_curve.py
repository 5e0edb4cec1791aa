"""Accuracy against post-training set size on train_large (issue 28): a table and a plot.

    python scripts/size_curve.py [--curve results/size-curve-downstream-large]
                                 [--compare results/compare-downstream-large]
                                 [--out results/size-curve-downstream-large-summary]

The sizes below all of train_large come from the size-curve experiment; the point at all 49,000 items
is the comparison's seeds 0-2 of the same picks (scripts/large_comparison.py). Before joining them the
script checks that the two experiment files give each family the same settings. Writes size_curve.json,
size_curve.md and size_curve.png into ``--out``, a folder beside the curve's: files of another kind
inside an experiment folder would stop its ``--resume``. A missing run or a settings mismatch is one
sentence and exit status 2, and so is a curve experiment still running (its folder lock).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from large_comparison import FULL_SIZE_SEEDS, SIZES, TRAIN_LARGE, as_shares  # noqa: E402

from moe_roma.io.atomic import write_json_atomic, write_text_atomic  # noqa: E402
from moe_roma.io.errors import RomaError  # noqa: E402
from moe_roma.io.jsonl import read_records  # noqa: E402
from moe_roma.io.lock import FolderLock  # noqa: E402
from moe_roma.io.outputs import Kind, guard_output  # noqa: E402
from moe_roma.scoring.stats import compare_paired, mean_interval  # noqa: E402

FAMILIES = ("router_tuning", "roma")
SPLITS = ("shifted", "heldout_tasks")
# Rewritten whole at each run (a summary of the two experiments, derived from their outcomes).
SUMMARY_FOLDER = Kind("size-curve summary", members=("size_curve.*",), finished=("size_curve.json",))


def _outcomes(folder: Path) -> dict[str, dict]:
    """Each run's outcome by its label (``method/seedN``, or ``method`` for a seed-free one); the last
    record of a label wins, as in ``roma experiment --resume``."""
    path = folder / "outcomes.jsonl"
    if not path.is_file():
        raise RomaError(f"{path} does not exist: run the experiment first")
    return {r["run"]: r["outcome"] for r in read_records(path)}


def check_same_settings(compare_cfg: dict, curve_cfg: dict, where: str) -> None:
    """Each family's curve methods must train as the comparison's method of that family does."""
    compare = {m["name"]: m.get("overrides", {}) for m in compare_cfg["methods"]}
    for m in curve_cfg["methods"]:
        family = m["name"].split("[")[0]
        if family not in FAMILIES:
            continue
        settings = {k: v for k, v in m.get("overrides", {}).items() if k != "train_fraction"}
        expected = as_shares(compare.get(family, {}), compare_cfg["train"])
        if settings != expected or curve_cfg["train"] != compare_cfg["train"]:
            raise RomaError(
                f"{where}: method {m['name']} does not train as the comparison's {family} "
                f"({settings} against {expected}); regenerate both with scripts/large_comparison.py"
            )


def correct_flags(curve: dict[str, dict], compare: dict[str, dict]) -> dict[tuple, list[bool]]:
    """Correct flags by (family, size, seed, split), and by ("base", 0, None, split)."""
    flags: dict[tuple, list[bool]] = {}
    missing = []
    for split in SPLITS:
        if "base" not in curve:
            missing.append("base")
        else:
            flags["base", 0, None, split] = curve["base"]["splits"][split]["correct"]
    for family in FAMILIES:
        for n in SIZES:
            source, name = (compare, family) if n == TRAIN_LARGE else (curve, f"{family}[n={n}]")
            for seed in FULL_SIZE_SEEDS:
                label = f"{name}/seed{seed}"
                if label not in source:
                    missing.append(label)
                    continue
                for split in SPLITS:
                    flags[family, n, seed, split] = source[label]["splits"][split]["correct"]
    if missing:
        raise RomaError(f"runs missing from the outcomes: {', '.join(sorted(set(missing)))}")
    return flags


def summarise(flags: dict[tuple, list[bool]]) -> dict:
    """Mean accuracy over seeds with a t-interval per family, size and split; RoMA minus router tuning
    paired per seed (McNemar), and the base model per split."""
    acc = {k: sum(v) / len(v) for k, v in flags.items()}
    out: dict = {"base": {s: acc["base", 0, None, s] for s in SPLITS}, "points": [], "gaps": []}
    for split in SPLITS:
        for n in SIZES:
            for family in FAMILIES:
                values = [acc[family, n, s, split] for s in FULL_SIZE_SEEDS]
                out["points"].append(
                    {
                        "family": family,
                        "n": n,
                        "split": split,
                        "mean": sum(values) / len(values),
                        "ci": mean_interval(values),
                        "per_seed": values,
                    }
                )
            paired = [
                compare_paired(flags["router_tuning", n, s, split], flags["roma", n, s, split])
                for s in FULL_SIZE_SEEDS
            ]
            diffs = [p.diff for p in paired]
            out["gaps"].append(
                {
                    "n": n,
                    "split": split,
                    "mean_diff": sum(diffs) / len(diffs),
                    "ci": mean_interval(diffs),
                    "p_values": [p.p_value for p in paired],
                    "n_significant": sum(p.p_value < 0.05 for p in paired),
                }
            )
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _interval(ci, signed: bool = False) -> str:
    if ci is None:
        return ""
    f = "{:+.1f}" if signed else "{:.1f}"
    return f" [{f.format(100 * ci[0])}, {f.format(100 * ci[1])}]"


def markdown(summary: dict) -> str:
    """One table per split: each size's accuracy per family and RoMA's paired gap to router tuning."""
    seeds = len(FULL_SIZE_SEEDS)
    lines = [
        f"Accuracy (%) against post-training set size, mean over {seeds} seeds with 95% t-intervals;",
        "RoMA minus router tuning is paired per seed on the same items (McNemar p < 0.05: seeds of "
        f"{seeds}).",
    ]
    for split in SPLITS:
        lines += [
            "",
            f"**{split}** (base {_pct(summary['base'][split])}%)",
            "",
            "| items | router tuning | RoMA | RoMA - router tuning | significant seeds |",
            "|---|---|---|---|---|",
        ]
        for n in SIZES:
            cells = []
            for family in FAMILIES:
                p = next(
                    q for q in summary["points"] if (q["family"], q["n"], q["split"]) == (family, n, split)
                )
                cells.append(_pct(p["mean"]) + _interval(p["ci"]))
            g = next(q for q in summary["gaps"] if (q["n"], q["split"]) == (n, split))
            gap = f"{100 * g['mean_diff']:+.1f}{_interval(g['ci'], signed=True)}"
            lines.append(f"| {n:,} | {cells[0]} | {cells[1]} | {gap} | {g['n_significant']} of {seeds} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, out: Path) -> Path:
    """Accuracy against items (log scale), one panel per split, the base model as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SPLITS), figsize=(5 * len(SPLITS), 3.6), sharey=True)
    for ax, split in zip(axes, SPLITS):
        for family, colour in zip(FAMILIES, ("tab:blue", "tab:orange")):
            pts = [q for q in summary["points"] if q["family"] == family and q["split"] == split]
            means = [100 * q["mean"] for q in pts]
            lo = [100 * (q["mean"] - q["ci"][0]) if q["ci"] else 0 for q in pts]
            hi = [100 * (q["ci"][1] - q["mean"]) if q["ci"] else 0 for q in pts]
            label = "router tuning" if family == "router_tuning" else "RoMA"
            ax.errorbar(
                [q["n"] for q in pts], means, yerr=[lo, hi], marker="o", capsize=3, color=colour, label=label
            )
        ax.axhline(100 * summary["base"][split], color="grey", linestyle="--", label="base")
        ax.set_xscale("log")
        ax.set_xlabel("post-training items (train_large subset)")
        ax.set_title(split)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--curve", type=Path, default=ROOT / "results" / "size-curve-downstream-large")
    parser.add_argument("--compare", type=Path, default=ROOT / "results" / "compare-downstream-large")
    parser.add_argument("--configs", type=Path, default=ROOT / "configs")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "size-curve-downstream-large-summary")
    args = parser.parse_args(argv)
    try:
        configs = {}
        for name in ("compare-downstream-large", "size-curve-downstream-large"):
            path = args.configs / f"{name}.yaml"
            if not path.is_file():
                raise RomaError(f"{path} does not exist: run scripts/large_comparison.py first")
            configs[name] = yaml.safe_load(path.read_text(encoding="utf-8"))
        check_same_settings(
            configs["compare-downstream-large"],
            configs["size-curve-downstream-large"],
            str(args.configs / "size-curve-downstream-large.yaml"),
        )
        output = guard_output("--out", args.out, SUMMARY_FOLDER, overwrite=True)
        if not args.curve.is_dir():
            raise RomaError(f"{args.curve} does not exist: run the size-curve experiment first")
        # The curve's experiment holds this lock while it runs: its outcomes are read whole, or not at all.
        with FolderLock(args.curve, "scripts/size_curve.py"):
            summary = summarise(correct_flags(_outcomes(args.curve), _outcomes(args.compare)))
            with output.staged() as folder:  # the previous summary stays until this one is whole
                write_json_atomic(folder / "size_curve.json", summary)
                write_text_atomic(folder / "size_curve.md", markdown(summary))
                plot(summary, folder / "size_curve.png")
    except RomaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
