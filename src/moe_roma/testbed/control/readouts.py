"""The control's readouts, from the outcomes of ``roma experiment`` runs on its doses (docs/control.md).

- accuracy on the held-out marked items (in_dist, shifted, heldout_tasks, pooled) and on the plain
  ones (collateral damage);
- recovery = (method - corrupted) / (clean - corrupted) on the marked items, with a bootstrap interval
  over items (seeds pooled);
- each marked item's squared routing distance from its known clean routing, before (the corrupted
  routers) and after (a trained run's routers);
- the dose-response plot: recovery against beta, one line per method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma.data.example import MCExample
from moe_roma.manifold.graph import NeighbourSearch
from moe_roma.testbed.control.gates import EVAL_SPLITS

MARKED = tuple(f"{s}_marked" for s in EVAL_SPLITS)
PLAIN = tuple(f"{s}_plain" for s in EVAL_SPLITS)


def outcomes_by_run(folder: Path) -> dict[str, dict]:
    """The last recorded outcome of each run label (``base``, ``method/seed0``) of an experiment folder."""
    from moe_roma.io.jsonl import read_records

    records = read_records(Path(folder) / "outcomes.jsonl")
    return {r["run"]: r["outcome"] for r in records if "run" in r and "outcome" in r}


def pooled_correct(outcome: dict, splits: Sequence[str]) -> list[bool]:
    """The per-item correctness of ``splits``, concatenated in the order given."""
    return [bool(c) for s in splits for c in outcome["splits"][s]["correct"]]


def bootstrap_interval(
    n: int, statistic: Callable[[np.ndarray], float | None], n_boot: int = 2000, seed: int = 0
) -> tuple[list[float] | None, int]:
    """A 95% percentile interval of ``statistic`` over ``n_boot`` resamples of ``n`` units (index
    arrays); a resample where the statistic is undefined (None) is left out. Returns the interval (None
    if every resample was left out) and how many were left out."""
    rng = np.random.default_rng(seed)
    draws = [v for v in (statistic(rng.integers(0, n, n)) for _ in range(n_boot)) if v is not None]
    ci = [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))] if draws else None
    return ci, n_boot - len(draws)


def recovery(
    method: Sequence[Sequence[bool]],
    corrupted: Sequence[bool],
    clean: Sequence[bool],
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """(method - corrupted) / (clean - corrupted) in accuracy, ``method`` one correctness list per seed.

    The interval resamples items (the same items for every seed, the corrupted and the clean model);
    resamples where the clean model is not ahead of the corrupted one are left out, and counted.
    """
    m = np.asarray(method, dtype=float)  # (seeds, items)
    c, k = np.asarray(corrupted, dtype=float), np.asarray(clean, dtype=float)
    if m.ndim != 2 or m.shape[1] != len(c) or len(c) != len(k):
        raise ValueError("method, corrupted and clean must score the same items")
    gap = k.mean() - c.mean()
    value = (m.mean() - c.mean()) / gap if gap > 0 else float("nan")

    def resampled(i: np.ndarray) -> float | None:
        g = k[i].mean() - c[i].mean()
        return (m[:, i].mean() - c[i].mean()) / g if g > 0 else None

    ci, left_out = bootstrap_interval(len(c), resampled, n_boot, seed)
    return {"value": float(value), "ci": ci, "gap": float(gap), "resamples_without_gap": left_out}


def method_runs(outcomes: dict[str, dict]) -> dict[str, list[str]]:
    """Run labels grouped by method: ``{"roma": ["roma/seed0", "roma/seed1"], "base": ["base"]}``."""
    groups: dict[str, list[str]] = {}
    for run in outcomes:
        groups.setdefault(run.split("/seed")[0], []).append(run)
    return groups


def dose_table(
    experiment: Path,
    ceiling: Path,
    corrupted_run: str = "base",
    clean_run: str = "base",
    reference: str = "router_tuning",
) -> list[dict]:
    """One row per method of a dose's experiment: marked and plain accuracy (mean over seeds), recovery,
    and on the marked items the comparison with the ``reference`` method (``marked_comparison``).

    ``ceiling`` is the clean model's experiment on the same data files (its ``clean_run``)."""
    runs = outcomes_by_run(experiment)
    clean = outcomes_by_run(ceiling)[clean_run]
    corrupted = runs[corrupted_run]
    groups = method_runs(runs)
    marked = {m: [pooled_correct(runs[r], MARKED) for r in labels] for m, labels in groups.items()}
    rows = []
    for method, labels in groups.items():
        plain = [pooled_correct(runs[r], PLAIN) for r in labels]
        row = {
            "method": method,
            "seeds": len(labels),
            "marked": float(np.mean(marked[method])),
            "plain": float(np.mean(plain)),
            "recovery": recovery(
                marked[method], pooled_correct(corrupted, MARKED), pooled_correct(clean, MARKED)
            ),
            "plain_change": float(np.mean(plain) - np.mean(pooled_correct(clean, PLAIN))),
        }
        if reference in marked and method != reference:
            ref = marked[reference]
            # A seed-free method (the base, C3PO) has one outcome, set against every seed of the reference.
            own = marked[method] * len(ref) if len(marked[method]) == 1 else marked[method]
            if len(own) == len(ref):
                row["vs_reference"] = {"method": reference, **marked_comparison(own, ref)}
        rows.append(row)
    return rows


# A mean squared routing distance below this is no gap: the beta = 0 dose's planting leaves 6.5e-5.
NO_GAP = 1e-3


def accuracy_entry(flags: Sequence[bool]) -> dict:
    """An accuracy with its 95% Wilson interval, as the readouts record it."""
    from moe_roma.scoring.stats import accuracy

    acc = accuracy(flags)
    return {"accuracy": acc.acc, "ci": list(acc.ci) if acc.ci else None}


def routing_distance(routing: torch.Tensor, clean_routing: torch.Tensor) -> torch.Tensor:
    """Each item's squared distance from its clean routing, summed over the tuned layers: (N,)."""
    return ((routing.float() - clean_routing.float()) ** 2).sum(dim=(1, 2))


def routing_movement(
    corrupted: PreTrainedModel,
    clean: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[MCExample],
    runs: dict[str, Sequence[Path]],
    layers: str = "last5",
    n_boot: int = 2000,
    reference: str | None = "router_tuning",
) -> dict[str, dict]:
    """The decisive mechanistic readout: each marked item's squared routing distance from its known
    clean routing (the clean model's routing of the same marked prompt), before (the corrupted routers)
    and after (each run's routers, loaded into the corrupted model), in the tuned ``layers``.

    ``runs[method]`` lists that method's run folders (one per seed); the after distance averages the
    seeds per item. Returns per method the mean before and after, their paired difference with a 95%
    bootstrap interval over items, and the share of items moved closer; with a ``reference`` method
    among the runs, each other method's after distance minus the reference's, per item, with its
    interval (``vs_reference``: below 0 is closer to the clean routing than the reference gets)."""
    from moe_roma.models.checkpoint import apply_router_checkpoint, restore_routers, router_snapshot
    from moe_roma.routing.collect import collect_routing

    def routing(model) -> torch.Tensor:
        store, _ = collect_routing(
            model, tokenizer, items, layers=layers, scoring="continuation", progress=False
        )
        return store.routing

    target = routing(clean)
    before = routing_distance(routing(corrupted), target)
    snapshot = router_snapshot(corrupted)
    out, afters = {}, {}
    try:
        for method, folders in runs.items():
            after = []
            for folder in folders:
                apply_router_checkpoint(corrupted, folder)
                after.append(routing_distance(routing(corrupted), target))
                restore_routers(corrupted, snapshot)
            mean_after = afters[method] = torch.stack(after).mean(0)
            change = (mean_after - before).double().numpy()
            ci, _ = bootstrap_interval(len(change), lambda i, d=change: float(d[i].mean()), n_boot)
            out[method] = {
                "before": float(before.mean()),
                "after": float(mean_after.mean()),
                "change": float(change.mean()),
                "change_ci": ci,
                "closer_share": float((change < 0).mean()),
                "seeds": len(folders),
            }
    finally:
        restore_routers(corrupted, snapshot)
    if reference in afters:
        for method, after in afters.items():
            if method != reference:
                gap = (after - afters[reference]).double().numpy()
                ci, _ = bootstrap_interval(len(gap), lambda i, d=gap: float(d[i].mean()), n_boot)
                out[method]["vs_reference"] = {"method": reference, "diff": float(gap.mean()), "ci": ci}
    return out


def last_token_repair(
    corrupted: PreTrainedModel,
    clean: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[MCExample],
    layers: str | list[int] = "last5",
    n_boot: int = 2000,
) -> dict:
    """Where the planted damage lies: the marked items scored four ways, on the same items.

    - ``clean`` and ``corrupted``: each model with its own routing;
    - ``corrupted_with_clean_last_token``: the corrupted model with the last prompt token's routing in
      the tuned ``layers`` set to the clean model's routing of the same prompt, every other position
      left as the corrupted routers route it. This is the most that moving the routing RoMA reads all
      the way back can regain (``share_repaired``, a recovery with its interval);
    - ``clean_with_corrupted_last_token``: the clean model with only that routing corrupted, what the
      last-token misrouting costs on its own (``share_from_last_token`` of the drop).

    Under continuation scoring with one-token answers the last prompt token's output is all that is
    read, so what the first repair leaves lies in the routing of the other positions, which RoMA
    does not constrain."""
    from moe_roma.diagnose.target_test import score_under_routing
    from moe_roma.models.discovery import discover_routers
    from moe_roma.testbed.control.gates import collect_store

    tuned = discover_routers(clean).select_layers(layers)
    own = {"clean": collect_store(clean, tokenizer, items, tuned)}
    own["corrupted"] = collect_store(corrupted, tokenizer, items, tuned)
    repaired = score_under_routing(corrupted, tokenizer, own["corrupted"], {"clean": own["clean"].routing})
    harmed = score_under_routing(clean, tokenizer, own["clean"], {"corrupted": own["corrupted"].routing})
    correct = {
        "clean": harmed["base"],
        "corrupted": repaired["base"],
        "corrupted_with_clean_last_token": repaired["clean"],
        "clean_with_corrupted_last_token": harmed["corrupted"],
    }
    out: dict = {"n": len(items), "layers": tuned}
    out.update({name: accuracy_entry(flags) for name, flags in correct.items()})
    out["share_repaired"] = recovery(
        [correct["corrupted_with_clean_last_token"]], correct["corrupted"], correct["clean"], n_boot
    )
    # (clean - last-token-only) / (clean - corrupted) is one minus that model's recovery.
    kept = recovery(
        [correct["clean_with_corrupted_last_token"]], correct["corrupted"], correct["clean"], n_boot
    )
    out["share_from_last_token"] = {
        **kept,
        "value": 1 - kept["value"],
        "ci": [1 - kept["ci"][1], 1 - kept["ci"][0]] if kept["ci"] else None,
    }
    return out


def target_distance(
    corrupted: PreTrainedModel,
    clean: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: Sequence[MCExample],
    items: Sequence[MCExample],
    layers: str | list[int] = "last5",
    graph: NeighbourSearch | None = None,
    n_boot: int = 2000,
) -> dict:
    """How far RoMA's target lies from each marked item's clean routing, and why.

    The target is the gates' (the target test's): the kernel mean of the item's successful neighbours
    in ``train`` (the RoMA training set, routed and scored by the corrupted model), at the last prompt
    token of the tuned ``layers``. Beside it, the same neighbours' *clean* routing averaged with the
    same weights: what the target would be if only the neighbours' own misrouting were undone. Per
    item, the squared distance from its clean routing (summed over layers) of

    - ``corrupted``: its own routing under the corrupted routers (what RoMA starts from);
    - ``target``: RoMA's target;
    - ``target_clean_neighbours``: the target with the neighbours' clean routing;

    with ``gap_closed``, the share of the corrupted distance the target removes (95% bootstrap
    intervals over items; None where the corrupted routing is within ``NO_GAP`` of the clean), the
    kernel weight on marked neighbours (the ones the corruption misroutes), and the items' accuracy
    with the last-token routing set to each target (as ``last_token_repair`` scores the clean
    routing)."""
    from moe_roma.diagnose.target_test import kernel_mean_targets, score_under_routing
    from moe_roma.manifold.graph import build_neighbour_graph
    from moe_roma.models.discovery import discover_routers
    from moe_roma.testbed.control.gates import collect_store
    from moe_roma.testbed.control.setting import is_marked_id

    graph = graph or NeighbourSearch()
    tuned = discover_routers(clean).select_layers(layers)
    ref = collect_store(corrupted, tokenizer, train, tuned, embed=True)
    ref_clean = collect_store(clean, tokenizer, train, tuned).routing
    own = collect_store(corrupted, tokenizer, items, tuned, embed=True)
    own_clean = collect_store(clean, tokenizer, items, tuned).routing
    g = build_neighbour_graph(ref.embeddings.numpy(), ref.successful, graph, queries=own.embeddings.numpy())
    targets = {
        "target": kernel_mean_targets(g, ref.routing),
        "target_clean_neighbours": kernel_mean_targets(g, ref_clean),
    }
    dist = {"corrupted": routing_distance(own.routing, own_clean)}
    dist.update({name: routing_distance(t, own_clean) for name, t in targets.items()})
    marked = torch.tensor([is_marked_id(i) for i in ref.ids] + [False])  # the last entry: padding (-1)
    marked_weight = (g.weights * marked[g.indices].float()).sum(1)
    has_t = g.has_neighbours()
    has = has_t.numpy()
    d = {k: v.double().numpy()[has] for k, v in dist.items()}

    def closed(i: np.ndarray, name: str) -> float | None:
        before = d["corrupted"][i].mean()
        return None if before < NO_GAP else float(1 - d[name][i].mean() / before)

    out: dict = {
        "n": len(items),
        "with_neighbours": int(has.sum()),
        "successful": len(ref.successful),  # the gates' RoMA training set has the same successful set
        "layers": tuned,
        "k": graph.k,
    }
    out["distance"] = {k: float(v.mean()) for k, v in d.items()}
    out["gap_closed"] = {}
    for name in targets:
        ci, _ = bootstrap_interval(len(d[name]), lambda i, n=name: closed(i, n), n_boot)
        out["gap_closed"][name] = {"value": closed(np.arange(len(d[name])), name), "ci": ci}
    out["marked_neighbour_weight"] = float(marked_weight[has_t].mean())
    scored = score_under_routing(corrupted, tokenizer, own, targets)
    out["accuracy"] = {
        "corrupted" if name == "base" else name: accuracy_entry(flags) for name, flags in scored.items()
    }
    return out


def marked_comparison(
    a: Sequence[Sequence[bool]], b: Sequence[Sequence[bool]], n_boot: int = 2000, seed: int = 0
) -> dict:
    """Method ``a`` against method ``b`` on the pooled marked items, one correctness list per seed each
    (the same seeds in the same order): per seed the accuracy difference and the exact McNemar p-value;
    pooled, the difference of the per-item means over seeds with a 95% bootstrap interval over items."""
    from moe_roma.scoring.stats import compare_paired

    if len(a) != len(b) or not a:
        raise ValueError("both methods need the same seeds")
    per_seed = []
    for x, y in zip(a, b):
        cmp = compare_paired(list(y), list(x))
        per_seed.append({"diff": cmp.diff, "p_value": cmp.p_value})
    per_item = np.asarray(a, dtype=float).mean(0) - np.asarray(b, dtype=float).mean(0)
    ci, _ = bootstrap_interval(len(per_item), lambda i: float(per_item[i].mean()), n_boot, seed)
    return {"per_seed": per_seed, "diff": float(per_item.mean()), "ci": ci}


def rank_correlation(x: Sequence[float], y: Sequence[float], n_boot: int = 2000, seed: int = 0) -> dict:
    """Spearman's rank correlation of ``x`` and ``y`` (the target margin against RoMA's gain over router
    tuning, one pair per dose or testbed), with a 95% bootstrap interval over the pairs."""
    from scipy.stats import spearmanr

    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) != len(b) or len(a) < 3:
        raise ValueError("a rank correlation needs at least 3 pairs of equal length")

    def resampled(i: np.ndarray) -> float | None:
        if np.ptp(a[i]) > 0 and np.ptp(b[i]) > 0:  # a resample of ties only has no rank correlation
            return float(spearmanr(a[i], b[i]).statistic)
        return None

    ci, _ = bootstrap_interval(len(a), resampled, n_boot, seed)
    return {"rho": float(spearmanr(a, b).statistic), "ci": ci, "n": len(a)}


def plot_dose_response(readouts: Sequence[dict], path: Path, recovery_limits=(-1.5, 3.0)) -> Path:
    """The dose-response figure over beta at the 50% marked share, one line per method, three panels:
    recovery (the pre-registered readout; its interval widens without bound as the clean-corrupted gap
    shrinks at small doses, so the axis is cut at ``recovery_limits`` and says so), marked accuracy
    minus router tuning's, and the marked items' routing distance from their clean routing (the
    corrupted routers' distance dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = sorted((r for r in readouts if r["marked_share"] == 0.5), key=lambda r: r["beta"])
    methods = sorted({row["method"] for r in curve for row in r["rows"]} - {"base"})
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    cut = False
    for i, method in enumerate(methods):
        dx = (i - (len(methods) - 1) / 2) * 0.008  # side by side at each beta, so intervals stay readable
        rows = [
            (r["beta"] + dx, next((x for x in r["rows"] if x["method"] == method), None), r) for r in curve
        ]
        rows = [(x, row, r) for x, row, r in rows if row is not None]
        style = {"marker": "o", "capsize": 3, "label": method, "color": f"C{i}"}
        rec = [
            (x, row["recovery"]) for x, row, _ in rows if row["recovery"]["value"] == row["recovery"]["value"]
        ]
        if rec:
            y = [v["value"] for _, v in rec]
            lo = [v["value"] - v["ci"][0] if v["ci"] else 0.0 for _, v in rec]
            hi = [v["ci"][1] - v["value"] if v["ci"] else 0.0 for _, v in rec]
            cut |= any(
                v["ci"] and (v["ci"][0] < recovery_limits[0] or v["ci"][1] > recovery_limits[1])
                for _, v in rec
            )
            axes[0].errorbar([x for x, _ in rec], y, yerr=[lo, hi], **style)
        vs = [(x, row["vs_reference"]) for x, row, _ in rows if row.get("vs_reference", {}).get("ci")]
        if vs:
            axes[1].errorbar(
                [x for x, _ in vs],
                [100 * v["diff"] for _, v in vs],
                yerr=[
                    [100 * (v["diff"] - v["ci"][0]) for _, v in vs],
                    [100 * (v["ci"][1] - v["diff"]) for _, v in vs],
                ],
                **style,
            )
        moved = [(x, r["movement"][method]) for x, _, r in rows if method in r.get("movement", {})]
        if moved:
            axes[2].plot(
                [x for x, _ in moved], [m["after"] for _, m in moved], marker="o", color=f"C{i}", label=method
            )
    before = [(r["beta"], next(iter(r["movement"].values()))["before"]) for r in curve if r.get("movement")]
    if before:
        axes[2].plot(*zip(*before), ls="--", color="black", label="corrupted routers (before)")
    axes[0].set_ylim(*recovery_limits)
    axes[0].axhline(0.0, color="grey", lw=0.8)
    axes[0].axhline(1.0, color="grey", lw=0.8, ls="--")
    axes[0].set_ylabel("recovery on marked items" + (" (axis cut; see readouts.json)" if cut else ""))
    axes[0].set_title("Recovery, 95% bootstrap intervals")
    axes[1].axhline(0.0, color="grey", lw=0.8)
    axes[1].set_ylabel("marked accuracy minus router tuning's (points)")
    axes[1].set_title("Against router tuning, 95% bootstrap intervals")
    axes[2].set_ylabel("squared routing distance from clean, tuned layers")
    axes[2].set_title("Marked items' routing after training")
    for ax in axes:
        ax.set_xlabel("beta (share of the partner family's routing planted)")
    for ax in axes[1:]:  # panel 2 names every method but the base; panel 3 the before line too
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle("Positive control: the dose-response at a 50% marked share (seeds pooled)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


ROMA_LAMBDAS = ("roma_lam0.2", "roma_lam0.8", "roma_lam3")


def preregistered_verdict(
    readouts: Sequence[dict], romas: Sequence[str] = ROMA_LAMBDAS, reference: str = "router_tuning"
) -> dict:
    """The pre-registration's criteria (docs/control.md, "What confirms the mechanism"), applied to
    ``control_readouts.py``'s per-dose readouts (``rows`` from ``dose_table``, ``movement`` from
    ``routing_movement``, ``target_test`` from the gates; the curve is over beta at the 50% share).

    - *confirmed*: at beta = 1, some RoMA lambda beats router tuning on the marked items beyond noise
      (McNemar p < 0.05 with RoMA ahead in at least 2 of 3 seeds, and the pooled difference's interval
      above 0) *and* moves them closer to their clean routing than router tuning does (the per-item
      distance difference's interval below 0); and, for such a lambda, recovery does not fall beyond
      its interval as beta rises over the doses where the target test passes.
    - *falsified*: at every dose where the target test passes, no RoMA lambda's marked accuracy lies
      above router tuning's, or none moves the routing closer than router tuning does.
    - *neither* otherwise; *untestable* where the target test passes at no dose.

    "The target test passes" is read as its net change's interval lying above 0: the margin over
    random successful items is the one gate the control misses, stated with every result.
    """
    curve = sorted((r for r in readouts if r["marked_share"] == 0.5), key=lambda r: r["beta"])
    passing = [r for r in curve if r["target_test"]["net_ci"][0] > 0]

    def row(readout: dict, method: str) -> dict | None:
        return next((x for x in readout["rows"] if x["method"] == method), None)

    def ahead(readout: dict, method: str) -> bool:
        cmp = (row(readout, method) or {}).get("vs_reference")
        if not cmp or cmp["ci"] is None:
            return False
        wins = sum(1 for s in cmp["per_seed"] if s["diff"] > 0 and s["p_value"] < 0.05)
        return wins >= 2 and cmp["ci"][0] > 0

    def closer(readout: dict, method: str) -> bool:
        cmp = (readout["movement"].get(method) or {}).get("vs_reference")
        return bool(cmp and cmp["ci"] is not None and cmp["ci"][1] < 0)

    def holds_up(method: str) -> bool:
        rec = [row(r, method)["recovery"] for r in passing if row(r, method)]
        return all(b["ci"] is not None and b["ci"][1] >= a["value"] for a, b in zip(rec, rec[1:]))

    top = next((r for r in curve if r["beta"] == 1.0), None)
    evidence = {
        m: {
            "ahead_at_beta_1": bool(top) and ahead(top, m),
            "closer_at_beta_1": bool(top) and closer(top, m),
            "recovery_holds_up": holds_up(m),
            "above_reference_at": [
                r["dose"] for r in passing if ((row(r, m) or {}).get("vs_reference") or {}).get("diff", 0) > 0
            ],
            "closer_at": [r["dose"] for r in passing if closer(r, m)],
        }
        for m in romas
    }
    out = {"passing_doses": [r["dose"] for r in passing], "evidence": evidence}
    if not passing:
        return {**out, "label": "untestable"}
    if any(
        e["ahead_at_beta_1"] and e["closer_at_beta_1"] and e["recovery_holds_up"] for e in evidence.values()
    ):
        return {**out, "label": "confirmed"}
    never_above = all(not e["above_reference_at"] for e in evidence.values())
    never_closer = all(not e["closer_at"] for e in evidence.values())
    return {**out, "label": "falsified" if never_above or never_closer else "neither"}
