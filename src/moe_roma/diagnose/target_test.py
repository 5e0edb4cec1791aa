"""The target test: does RoMA's own target route better than the item's own routing?

RoMA pulls each item's last-token routing in the tuned layers towards the kernel-weighted mean of
its k nearest successful neighbours' routing. Training can only gain from that pull where the
target is *better routing* than the item's own. This test measures exactly that, with forward
passes only: each item is scored with its last-prompt-token routing *set* to a target
(``RoutingTargets``, the same exact override C3PO uses), and to control targets:

- ``roma``: the kernel-weighted mean of the k nearest successful neighbours, built with the
  training graph's own settings (k, sigma, Gaussian kernel on ``1 - cosine``, near-duplicate
  threshold, ``include_self``);
- ``random``: the mean of k random successful items;
- ``same_task``: the mean of k random successful items of the item's own task (tasks known);
- ``other_task``: the mean of k random successful items of one other task (tasks known);
- ``uniform``: the same weight on every expert.

For each target it reports accuracy, items fixed (wrong under the base routing, right under the
target) and broken (the other way round), with 95% intervals, overall and per task, and the
*target margin*: RoMA's fixed share of the failed items minus the random control's, a paired
difference on the same items.

Items come from the routing file itself (neighbours from its successful set, never the item
itself unless ``include_self``), or from a second routing file (``items``, e.g. ``in_dist``), whose
neighbours are drawn from the first file's successful set.

>>> from moe_roma.routing.store import load_routing_store  # doctest: +SKIP
>>> result = target_test(model, tok, load_routing_store("train.json"), train_embeddings)  # doctest: +SKIP
>>> result["margin"]["fixed_diff"]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma.io.errors import RomaError
from moe_roma.manifold.graph import NeighbourGraph, NeighbourSearch, build_neighbour_graph
from moe_roma.methods.c3po import forward_with_targets
from moe_roma.methods.common.batches import letter_ids_tensor
from moe_roma.methods.common.forward import items_forward
from moe_roma.methods.common.items import (
    ItemSet,
    PassCount,
    fill_cache,
    frozen_eval,
    length_order,
    prepare_items,
    resolve_layers,
    resolve_task_loss,
    suffix_fraction,
)
from moe_roma.models.discovery import MoEInfo, discover_routers
from moe_roma.routing.store import RoutingStore
from moe_roma.scoring.stats import compare_paired, paired_difference_ci, wilson_interval

TARGETS: dict[str, str] = {
    "roma": "RoMA's target: kernel mean of the k nearest successful neighbours",
    "random": "mean of k random successful items",
    "same_task": "mean of k random successful items of the same task",
    "other_task": "mean of k random successful items of another task",
    "uniform": "uniform over experts",
}
TASK_TARGETS = ("same_task", "other_task")
MIN_FAILED = 20  # below this, fixed shares and the margin are "too few to tell"


def _has_tasks(tasks: Sequence[str]) -> bool:
    return len({t for t in tasks if t and t != "default"}) >= 2


def _mean_of(
    pool: np.ndarray, k: int, rng: np.random.Generator, routing: torch.Tensor
) -> torch.Tensor | None:
    """Mean routing of ``k`` members drawn without replacement from ``pool`` (None when it is empty)."""
    if len(pool) == 0:
        return None
    pick = rng.choice(pool, size=min(k, len(pool)), replace=False)
    return routing[torch.as_tensor(pick)].mean(0)


def control_targets(
    ref: RoutingStore,
    ref_routing: torch.Tensor,
    item_rows: Sequence[int] | None,
    item_tasks: Sequence[str],
    k: int,
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """The control targets (N, L, E) per control, and how many items each could not build a target for.

    ``item_rows[i]`` is item i's own row in ``ref`` (never drawn for it), or None for items of another file.
    An item without a target keeps its own routing there (NaN rows here, filled by the caller).
    """
    rng = np.random.default_rng(seed)
    n = len(item_tasks)
    succ = np.asarray(ref.successful, dtype=np.int64)
    shape = (n, *ref_routing.shape[1:])
    with_tasks = _has_tasks(ref.tasks)
    names = ["random", *(TASK_TARGETS if with_tasks else ()), "uniform"]
    out = {name: torch.full(shape, float("nan")) for name in names}
    out["uniform"][:] = 1.0 / ref_routing.shape[-1]
    by_task: dict[str, np.ndarray] = {}
    if with_tasks:
        succ_tasks = np.asarray([ref.tasks[j] for j in succ])
        by_task = {t: succ[succ_tasks == t] for t in sorted(set(succ_tasks.tolist()))}
    missing = dict.fromkeys(names, 0)
    for i in range(n):
        own = -1 if item_rows is None else int(item_rows[i])
        others = succ[succ != own]
        pools = {"random": others}
        if with_tasks:
            task = item_tasks[i]
            same = by_task.get(task, np.empty(0, dtype=np.int64))
            pools["same_task"] = same[same != own]
            other = [t for t, members in by_task.items() if t != task and len(members)]
            pools["other_task"] = (
                by_task[other[rng.integers(len(other))]] if other else np.empty(0, dtype=np.int64)
            )
        for name, pool in pools.items():
            mean = _mean_of(pool, k, rng, ref_routing)
            if mean is None:
                missing[name] += 1
            else:
                out[name][i] = mean
    return out, missing


def _share(k: int, n: int) -> dict:
    if n == 0:
        return {"k": 0, "n": 0, "share": None, "ci": None}
    return {"k": int(k), "n": int(n), "share": k / n, "ci": list(wilson_interval(k, n))}


def score_target(base: Sequence[bool], under: Sequence[bool]) -> dict:
    """Accuracy under a target, items fixed and broken against the base, and the paired net change."""
    cmp = compare_paired(list(base), list(under))
    n_failed = cmp.only_tuned + cmp.neither
    n_right = cmp.both + cmp.only_base
    return {
        "accuracy": _share(cmp.both + cmp.only_tuned, cmp.n),
        "fixed": _share(cmp.only_tuned, n_failed),
        "broken": _share(cmp.only_base, n_right),
        "net": {"diff": cmp.diff, "ci": list(cmp.diff_ci) if cmp.diff_ci else None, "mcnemar_p": cmp.p_value},
    }


def target_margin(base: Sequence[bool], roma: Sequence[bool], control: Sequence[bool]) -> dict:
    """RoMA's fixed share of the failed items minus the control's, with a paired 95% interval."""
    failed = [i for i, ok in enumerate(base) if not ok]
    both = sum(1 for i in failed if roma[i] and control[i])
    only_roma = sum(1 for i in failed if roma[i] and not control[i])
    only_control = sum(1 for i in failed if control[i] and not roma[i])
    neither = len(failed) - both - only_roma - only_control
    out: dict = {"n_failed": len(failed), "too_few": len(failed) < MIN_FAILED}
    if not failed:
        return {**out, "fixed_diff": None, "ci": None}
    diff = (only_roma - only_control) / len(failed)
    ci = paired_difference_ci(both, only_control, only_roma, neither)
    return {**out, "fixed_diff": diff, "ci": list(ci)}


def _summarise(
    base: list[bool], correct: dict[str, list[bool]], tasks: list[str], fallback: dict[str, int]
) -> dict:
    targets = {
        name: {**score_target(base, flags), "label": TARGETS[name], "kept_own_routing": fallback.get(name, 0)}
        for name, flags in correct.items()
    }
    per_task: dict[str, dict] = {}
    for task in sorted(set(tasks)):
        rows = [i for i, t in enumerate(tasks) if t == task]
        sub_base = [base[i] for i in rows]
        per_task[task] = {
            "n": len(rows),
            "base": _share(sum(sub_base), len(rows)),
            "targets": {
                name: score_target(sub_base, [flags[i] for i in rows]) for name, flags in correct.items()
            },
        }
    margin = target_margin(base, correct["roma"], correct["random"])
    margin["net_vs_base"] = targets["roma"]["net"]
    return {"base": _share(sum(base), len(base)), "targets": targets, "margin": margin, "per_task": per_task}


def target_test(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    store: RoutingStore,
    embeddings: np.ndarray,
    items: RoutingStore | None = None,
    item_embeddings: np.ndarray | None = None,
    graph: NeighbourSearch | None = None,
    n_items: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    max_length: int | None = None,
    prefix_cache: bool = True,
    progress: bool = True,
    info: MoEInfo | None = None,
) -> dict:
    """Score items with their last-token routing set to RoMA's target and to the controls (module doc).

    ``store``: the RoMA training set's routing file (its ``is_correct`` is the successful set);
    ``embeddings``: its L2-normalised question embeddings. ``items`` / ``item_embeddings``: a second
    routing file to test instead of the store's own items. ``n_items``: test a random sample of
    that many items (``seed``). ``graph``: the training run's neighbour settings.
    Returns a JSON-ready dict: ``base``, ``targets`` (per target: accuracy, fixed, broken, net),
    ``margin``, ``per_task``, ``skipped`` (controls not run, and why) and the settings.
    """
    start = time.perf_counter()
    graph = graph or NeighbourSearch()
    info = info or discover_routers(model)
    own = items is None
    items, item_embeddings = _items_under_test(store, embeddings, items, item_embeddings, info)
    task_loss = resolve_task_loss(items, None)
    resolve_task_loss(store, task_loss)
    tuned = resolve_layers(info, store, None)
    rows = _sample_rows(len(items), n_items, seed)
    sample = items.subset(rows)
    targets, fallback = _targets(
        store, embeddings, None if own else item_embeddings, rows, sample, graph, seed
    )
    data = _item_set(sample, tokenizer, task_loss, tuned, max_length)
    pred, base_routing, counts = _score(model, info, tuned, data, targets, batch_size, prefix_cache, progress)
    correct = {name: (p == data.answers).tolist() for name, p in pred.items()}
    base = correct.pop("base")
    result = _summarise(base, correct, list(sample.tasks), fallback)
    # The captured base routing is the file's routing, unless the model or the prompts changed.
    result.update(
        {
            "n": len(data.items),
            "items": "own" if own else "second file",
            "layers": tuned,
            "task_loss": task_loss,
            **_settings(graph, store, seed),
            "store_disagreements": sum(b != bool(s) for b, s in zip(base, sample.is_correct)),
            "routing_drift": float((base_routing - sample.routing[:, data.columns].float()).abs().max()),
            "passes": counts.to_dict(),
            "seconds": round(time.perf_counter() - start, 2),
        }
    )
    return result


def score_under_routing(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: RoutingStore,
    targets: dict[str, torch.Tensor],
    batch_size: int = 16,
    max_length: int | None = None,
    prefix_cache: bool = True,
    progress: bool = False,
    info: MoEInfo | None = None,
) -> dict[str, list[bool]]:
    """Each item's correctness with its own routing (``base``) and with its last-token routing in the
    routing file's layers set to each of ``targets`` (N, L, E; a NaN row keeps its own routing): the
    target test's scoring, for targets built elsewhere, such as another model's routing of the same
    prompts."""
    info = info or discover_routers(model)
    items.fit_to_model(info)
    tuned = resolve_layers(info, items, None)
    for name, target in targets.items():
        if tuple(target.shape) != (len(items), len(tuned), info.num_experts):
            raise RomaError(
                f"target {name!r} has shape {tuple(target.shape)}; the items need "
                f"{(len(items), len(tuned), info.num_experts)}"
            )
    data = _item_set(items, tokenizer, resolve_task_loss(items, None), tuned, max_length)
    pred, _, _ = _score(model, info, tuned, data, targets, batch_size, prefix_cache, progress)
    return {name: (p == data.answers).tolist() for name, p in pred.items()}


def _item_set(
    items: RoutingStore,
    tokenizer: PreTrainedTokenizerBase,
    task_loss: str,
    tuned: list[int],
    max_length: int | None,
) -> ItemSet:
    """The items as the scoring forward takes them, with the answer letters' ids under letter scoring."""
    data = prepare_items(items, tokenizer, task_loss, tuned, max_length)
    if task_loss == "letter":
        data.letter_ids = letter_ids_tensor(tokenizer, max(it.n_choices for it in data.items))
    return data


def _sample_rows(n: int, n_items: int | None, seed: int) -> list[int]:
    """Every row, or a seeded random sample of ``n_items`` of them, in order."""
    if n_items is None or n_items >= n:
        return list(range(n))
    gen = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=gen)[:n_items].tolist())


def _settings(graph: NeighbourSearch, store: RoutingStore, seed: int) -> dict:
    """The neighbour settings, the controls skipped and why, and the seed, for the result."""
    skipped = (
        {}
        if _has_tasks(store.tasks)
        else {
            name: "the routing file records no tasks (one task for every item), so there is nothing to "
            "draw by task"
            for name in TASK_TARGETS
        }
    )
    return {
        "graph": {
            "k": graph.k,
            "sigma": graph.sigma,
            "dedupe_threshold": graph.dedupe_threshold,
            "include_self": graph.include_self,
            "epsilon": graph.epsilon,
        },
        "skipped": skipped,
        "seed": seed,
    }


def _items_under_test(
    store: RoutingStore,
    embeddings: np.ndarray,
    items: RoutingStore | None,
    item_embeddings: np.ndarray | None,
    info: MoEInfo,
) -> tuple[RoutingStore, np.ndarray]:
    """The items to test (the store's own, or a second file's recording the same layers) and their
    embeddings, checked against the model; the store must have a successful item to build targets from."""
    store.fit_to_model(info)
    own = items is None
    items = store if own else items
    item_embeddings = embeddings if own else item_embeddings
    if item_embeddings is None or np.asarray(item_embeddings).shape[0] != len(items):
        raise RomaError("the target test needs one embedding per item, in the items' order")
    if not own:
        items.fit_to_model(info)
        if list(items.layers) != list(store.layers):
            raise RomaError(
                f"the items' routing file records layers {items.layers}, the training file {store.layers}"
            )
    if not store.successful:
        raise RomaError("the routing file has no successful item: there is no target to build")
    return items, item_embeddings


def _targets(
    store: RoutingStore,
    embeddings: np.ndarray,
    item_embeddings: np.ndarray | None,
    rows: list[int],
    sample: RoutingStore,
    graph: NeighbourSearch,
    seed: int,
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Each tested item's routing under every target (N, L, E; NaN where it keeps its own): RoMA's
    kernel mean of its successful neighbours (``item_embeddings``: a second file's items, else the
    store's own ``rows``), and the controls; and how many items keep their own routing, per target."""
    g = build_neighbour_graph(
        np.asarray(embeddings, dtype=np.float32),
        store.successful,
        graph,
        queries=None if item_embeddings is None else np.asarray(item_embeddings, dtype=np.float32),
    )
    ref_routing = store.routing.float()
    roma = kernel_mean_targets(g, ref_routing)[rows]
    own_rows = rows if item_embeddings is None else None
    controls, fallback = control_targets(store, ref_routing, own_rows, list(sample.tasks), graph.k, seed)
    fallback["roma"] = int((~g.has_neighbours()[rows]).sum())
    return {"roma": roma, **controls}, fallback


def kernel_mean_targets(graph: NeighbourGraph, routing: torch.Tensor) -> torch.Tensor:
    """RoMA's target per query of ``graph``: the kernel-weighted mean of its neighbours' ``routing``
    (the reference rows' (M, L, E) routing), (N, L, E); NaN for a query without a neighbour."""
    idx, w = graph.indices, graph.weights
    target = (w[:, :, None, None] * routing.float()[idx.clamp_min(0)]).sum(1)
    target[~graph.has_neighbours()] = float("nan")  # no neighbour: the item keeps its own routing
    return target


def _score(
    model: PreTrainedModel,
    info: MoEInfo,
    tuned: list[int],
    data: ItemSet,
    targets: dict[str, torch.Tensor],
    batch_size: int,
    prefix_cache: bool,
    progress: bool,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, PassCount]:
    """Every item's answer with its own routing (``base``) and with each target's, its own routing, and
    the passes it took."""
    n = len(data.items)
    counts = PassCount(n)
    device = next(model.parameters()).device
    frac = suffix_fraction(info, tuned) if prefix_cache and min(tuned) > 0 else 1.0
    pred = {name: torch.full((n,), -1, dtype=torch.long) for name in ["base", *targets]}
    base_routing = torch.empty(n, len(tuned), info.num_experts)
    order = length_order(data.items)
    bar = tqdm(total=n, desc="target test", unit="item", disable=not progress)
    with frozen_eval(model), torch.no_grad():
        for c in range(0, n, batch_size):
            chunk = order[c : c + batch_size]
            batch = [data.items[i] for i in chunk]
            cache = (
                fill_cache(model, info, batch, data.pad, tuned, batch_size, counts) if prefix_cache else None
            )
            out = items_forward(
                model, info, tuned, batch, data.pad, data.task_loss, data.letter_ids, cache=cache
            )
            pred["base"][chunk] = out["scores"].argmax(-1).cpu()
            own_routing = out["routing"].float().cpu()
            base_routing[chunk] = own_routing
            counts.add_forward(len(chunk), frac)
            for name, target in targets.items():
                t = target[chunk]
                t = torch.where(torch.isnan(t), own_routing, t)  # no target: the item keeps its own routing
                out = forward_with_targets(model, info, tuned, data, batch, t.to(device), cache=cache)
                pred[name][chunk] = out["scores"].argmax(-1).cpu()
                counts.add_forward(len(chunk), frac)
            bar.update(len(chunk))
    bar.close()
    return pred, base_routing, counts
