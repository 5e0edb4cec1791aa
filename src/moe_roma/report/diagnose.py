"""The pictures and the markdown page of ``roma diagnose``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def project_2d(x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """A 2-D map of the rows of ``x``: UMAP when ``umap-learn`` is installed (as the paper draws them),
    else PCA. Returns the points and the method's name."""
    try:
        import umap  # noqa: F401  # optional

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(x), "UMAP"
    except ImportError:
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x), "PCA"


def plot_maps(
    routing: np.ndarray, embeddings: np.ndarray, tasks: list[str], correct: list[bool], out: Path
) -> Path:
    """Routing vectors and embeddings side by side, coloured by task (top) and by correctness (bottom)."""
    r_xy, how = project_2d(routing.reshape(routing.shape[0], -1))
    e_xy, _ = project_2d(embeddings)
    families = sorted(set(tasks))
    cmap = plt.get_cmap("tab20")
    fig, axes = plt.subplots(2, 2, figsize=(10, 8.4))
    ok = np.asarray(correct, dtype=bool)
    for col, (xy, name) in enumerate(((r_xy, "routing"), (e_xy, "task embeddings"))):
        ax = axes[0, col]
        for c, fam in enumerate(families):
            idx = [i for i, t in enumerate(tasks) if t == fam]
            ax.scatter(xy[idx, 0], xy[idx, 1], s=7, color=cmap(c % 20), label=fam)
        ax.set(title=f"{name} ({how}), by task")
        ax = axes[1, col]
        ax.scatter(xy[ok, 0], xy[ok, 1], s=7, color="tab:blue", label="answered right")
        ax.scatter(xy[~ok, 0], xy[~ok, 1], s=7, color="tab:red", label="answered wrong")
        ax.set(title=f"{name} ({how}), by correctness")
    if len(families) <= 20:
        axes[0, 1].legend(fontsize=6, markerscale=1.5, loc="center left", bbox_to_anchor=(1.0, 0.5))
    axes[1, 1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_layer_alignment(report: dict, out: Path) -> Path:
    """Bar chart of linear CKA and k-NN overlap between routing and embeddings, per tuned layer."""
    per_layer = report["alignment"]["per_layer"]
    layers = [str(x) for x in report["layers"]]
    overlap_key = next(k for k in per_layer[0] if k.startswith("knn_overlap"))
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(layers) + 2), 3.6))
    ax.bar(x - 0.2, [p["cka"] for p in per_layer], 0.4, label="linear CKA")
    ax.bar(x + 0.2, [p[overlap_key] for p in per_layer], 0.4, label=overlap_key.replace("_", " "))
    ax.axhline(
        report["alignment"][f"{overlap_key}_chance"], color="grey", lw=0.8, ls="--", label="overlap by chance"
    )
    ax.set_xticks(x, layers)
    ax.set(xlabel="layer", ylabel="alignment with task embeddings", ylim=(0, 1))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _ci(share: dict) -> str:
    """``47.2% [42.1, 52.4]`` for a share with its interval; ``too few`` without items."""
    if share["share"] is None:
        return "n/a"
    lo, hi = share["ci"]
    return f"{share['share']:.1%} [{100 * lo:.1f}, {100 * hi:.1f}]"


def target_table(result: dict) -> str:
    """The target test as a markdown table: accuracy, fixed and broken per target, net change vs the base."""
    too_few = result["margin"]["too_few"]
    lines = [
        "| routing set to | accuracy | fixed (of failed) | broken (of right) | net vs own routing |",
        "|---|---|---|---|---|",
        f"| own routing (base) | {_ci(result['base'])} | - | - | - |",
    ]
    for name, t in result["targets"].items():
        net = t["net"]
        fixed = "too few to tell" if too_few else f"{t['fixed']['k']} = {_ci(t['fixed'])}"
        lines.append(
            f"| {t['label']} (`{name}`) | {_ci(t['accuracy'])} | {fixed} | {t['broken']['k']} = "
            f"{_ci(t['broken'])} | {100 * net['diff']:+.1f} [{100 * net['ci'][0]:+.1f}, "
            f"{100 * net['ci'][1]:+.1f}] |"
        )
    m = result["margin"]
    if too_few:
        lines += [
            "",
            f"Target margin: too few to tell ({m['n_failed']} failed items; at least 20 are needed).",
        ]
    else:
        lines += [
            "",
            f"Target margin (RoMA's target minus k random successful items, fixed per failed item): "
            f"{100 * m['fixed_diff']:+.1f} points [{100 * m['ci'][0]:+.1f}, {100 * m['ci'][1]:+.1f}]; "
            f"net accuracy change against the base: {100 * m['net_vs_base']['diff']:+.1f} points.",
        ]
    return "\n".join(lines)


def per_task_table(result: dict) -> list[str]:
    """Accuracy per task with the item's own routing and under each target; fixed items in brackets."""
    names = list(result["targets"])
    lines = [
        "| task | n | own routing | " + " | ".join(f"`{n}` (fixed)" for n in names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for task, row in result["per_task"].items():
        cells = [
            f"{row['targets'][n]['accuracy']['share']:.0%} ({row['targets'][n]['fixed']['k']})" for n in names
        ]
        lines.append(f"| {task} | {row['n']} | {row['base']['share']:.0%} | " + " | ".join(cells) + " |")
    return lines


def plot_target_test(result: dict, out: Path) -> Path:
    """Accuracy under each target against the base (left); items fixed and broken per target (right)."""
    names = list(result["targets"])
    targets = [result["targets"][n] for n in names]
    x = np.arange(len(names))
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(names) + 3), 3.8))
    acc = [100 * t["accuracy"]["share"] for t in targets]
    err = np.array(
        [[a - 100 * t["accuracy"]["ci"][0], 100 * t["accuracy"]["ci"][1] - a] for a, t in zip(acc, targets)]
    ).T
    colours = ["tab:blue" if n == "roma" else "tab:grey" for n in names]
    left.bar(x, acc, yerr=err, color=colours, capsize=3)
    left.axhline(100 * result["base"]["share"], color="black", lw=1, ls="--", label="own routing (base)")
    left.set_xticks(x, names, rotation=20)
    left.set(ylabel="accuracy (%)", title=f"routing set to each target ({result['n']} items)", ylim=(0, 100))
    left.legend(fontsize=7)
    fixed = [t["fixed"]["k"] for t in targets]
    broken = [t["broken"]["k"] for t in targets]
    right.bar(x - 0.2, fixed, 0.4, label="fixed (wrong -> right)", color="tab:green")
    right.bar(x + 0.2, broken, 0.4, label="broken (right -> wrong)", color="tab:red")
    right.set_xticks(x, names, rotation=20)
    right.set(ylabel="items", title="answers changed against the base")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _f(x, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def diagnose_markdown(report: dict, source: str) -> str:
    """``report.md``: the verdict first, then every measurement with what it means."""
    lines = [f"# Will router post-training help? `{source}`", ""]
    verdict = report.get("verdict")
    if verdict:
        lines += [f"**Verdict: {verdict['label']}.** {verdict['why']}", "", f"_{verdict['caveat']}_", ""]
    for reason in report["cannot_tell"]:
        lines.append(f"- Cannot tell: {reason}.")
    if "target_test" in report:
        lines += _target_test_section(report["target_test"], verdict or {})
    lines += _success_section(report["success"])
    for name, section in SECTIONS.items():
        if name in report:
            lines += section(report[name], report)
    lines += ["", "## Maps", "", "![routing and embeddings](maps.png)", ""]
    return "\n".join(lines)


def _target_test_section(tt: dict, verdict: dict) -> list[str]:
    g = tt["graph"]
    lines = [
        "## The target test: does RoMA's target route better than the items' own?",
        "",
        f"Each of {tt['n']} items ({tt['items']}) answered with its last-prompt-token routing in layers "
        f"{tt['layers']} set to each target; neighbours among the routing file's successful items with "
        f"k {g['k']}, sigma {g['sigma']}, near-duplicates above {g['dedupe_threshold']} skipped"
        f"{', the item itself included' if g['include_self'] else ''} (95% intervals).",
        "",
        target_table(tt),
        "",
        "![target test](target_test.png)",
        "",
    ]
    lines += [f"- {name}: not run; {why}." for name, why in tt.get("skipped", {}).items()]
    lines += ["", *per_task_table(tt), ""]
    if "secondary" in verdict:
        lines += ["", f"Secondary evidence (the indirect measures below): {verdict['secondary']['why']}", ""]
    return lines


def _success_section(s: dict) -> list[str]:
    lines = [
        "",
        "## Success",
        "",
        f"{s['n_successful']} of {s['n']} items answered right ({s['share']:.1%}): the successful set RoMA "
        "aligns to.",
    ]
    if "per_task" in s:
        lines += ["", "| task | n | answered right |", "|---|---|---|"]
        lines += [f"| {t} | {v['n']} | {v['share']:.1%} |" for t, v in s["per_task"].items()]
    return lines


def _alignment_section(a: dict, report: dict) -> list[str]:
    key = next(k for k in a if k.startswith("knn_overlap") and not k.endswith("chance"))
    return [
        "",
        "## Alignment of routing with task embeddings",
        "",
        f"Linear CKA {_f(a['cka'])}; {key.replace('_', ' ')} {_f(a[key])} (chance {_f(a[key + '_chance'])}).",
        "",
        "![per-layer alignment](layer_alignment.png)",
        "",
    ]


def _correctness_section(c: dict, report: dict) -> list[str]:
    if not c.get("auc_routing"):
        return []
    return [
        "## Does correctness depend on routing?",
        "",
        f"A {c['k']}-NN classifier predicts correctness with ROC AUC {c['auc_routing']['mean']:.3f} "
        f"± {c['auc_routing']['sd']:.3f} from routing alone and {c['auc_embedding']['mean']:.3f} ± "
        f"{c['auc_embedding']['sd']:.3f} from embeddings alone ({c['folds']}-fold; 0.5 is chance).",
        "",
    ]


def _room_to_move_section(m: dict, report: dict) -> list[str]:
    if m.get("difference") is None:
        return []
    return [
        "## Room to move",
        "",
        f"Kernel-weighted squared routing distance to the {m['k']} nearest successful neighbours: failed "
        f"items {m['failed_mean']:.4f}, successful items {m['successful_mean']:.4f} (difference "
        f"{m['difference']:+.4f}, permutation p = {m['p_value']:.4f}).",
        "",
    ]


def _health_section(h: dict, report: dict) -> list[str]:
    lines = [
        "## Routing health",
        "",
    ]
    if "top_k" in report:  # where the k of the top-k slots came from
        lines += [f"Top-k slots with k = {report['top_k']} experts per token ({report['top_k_from']}).", ""]
    lines += [
        "| layer | entropy (nats) | share of log E | top-k share min..max |",
        "|---|---|---|---|",
    ]
    for layer, e, es, lo, hi in zip(
        report["layers"], h["entropy"], h["entropy_share"], h["utilisation_min"], h["utilisation_max"]
    ):
        lines.append(f"| {layer} | {e:.3f} | {es:.2f} | {lo:.3f}..{hi:.3f} |")
    if h.get("collapse"):  # the sentences training would log for this routing
        lines += ["", *(f"- {sentence}" for sentence in h["collapse"])]
    return lines


def _oracle_section(o: dict, report: dict) -> list[str]:
    lines = [
        "",
        "## Oracle headroom",
        "",
        f"On a random sample of {o['n']} items, oracle routing reaches {o['accuracy']:.1%} against the base "
        f"model's {o['base_accuracy']:.1%} (gap {o['gap']:+.1%}).",
    ]
    st = o.get("steering")
    if st:
        lines += [
            "",
            f"Aimed at the right answer, the oracle reaches it on {st['right_reach']:.1%} of the "
            f"{st['n_failed']} items the base gets wrong; aimed at a wrong choice the base did not pick, it "
            f"reaches that choice on {st['wrong_reach']:.1%} of {st['n_aimed']} items ({o['steps']} steps "
            f"each). {st['words']}",
        ]
    d = o.get("direction") or {}
    if "cos_change_pull" in d:
        lines += [
            "",
            "## Does RoMA's pull point where the oracle went?",
            "",
            f"For the {d['n_fixed']} items the oracle fixed, the cosine between the oracle's routing change "
            f"and RoMA's pull towards the {d['k']} nearest successful neighbours is "
            f"{d['cos_change_pull']:+.3f} on average (positive for {d['share_positive']:.0%} of them), "
            f"against {d['cos_change_random_pull']:+.3f} for a pull towards random successful items. The "
            f"oracle's changes of embedding neighbours agree with cosine {d['cos_change_neighbours']:+.3f}, "
            f"of random pairs {d['cos_change_random_pairs']:+.3f}. Mean length: oracle change "
            f"{d['change_norm']:.3f}, pull {d['pull_norm']:.3f}; the oracle's change per layer: "
            + ", ".join(f"{x:.3f}" for x in d["change_norm_per_layer"])
            + ".",
        ]
    return lines


# The report's section of each measure (``diagnose.measures.MEASURES``) and of the oracle, in the
# report's order: report entry -> (its value, the whole report) -> markdown lines.
SECTIONS: dict[str, Callable[[dict, dict], list[str]]] = {
    "alignment": _alignment_section,
    "correctness_signal": _correctness_section,
    "room_to_move": _room_to_move_section,
    "routing_health": _health_section,
    "oracle": _oracle_section,
}
