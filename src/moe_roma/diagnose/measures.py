"""Measurements that say whether re-training routers can help, from one collection pass.

All of them read a routing store (the base model's last-token routing, answers and correctness)
and the items' sentence embeddings; none needs a GPU or another forward pass. They are the
quantities the RoMA paper uses to explain its gains, measured on one's own model and data:

- ``success``: the successful share, overall and per task (the size of the target set);
- ``alignment``: how well routing lines up with task embeddings (linear CKA, k-NN overlap),
  overall and per layer;
- ``correctness_signal``: whether correctness can be predicted from routing alone, and from
  embeddings alone (k-NN classifiers, cross-validated ROC AUC; scikit-learn);
- ``room_to_move``: how far failed items sit from their successful neighbours in routing space,
  against successful items, with a permutation test;
- ``layer_health``: per-layer entropy and expert utilisation, and whether routing has collapsed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from moe_roma.manifold.graph import NeighbourSearch, build_neighbour_graph
from moe_roma.manifold.health import collapse, routing_health
from moe_roma.manifold.metrics import knn_overlap, linear_cka
from moe_roma.routing.store import RoutingStore


def success(is_correct: Sequence[bool], tasks: Sequence[str | None] | None = None) -> dict:
    """Share of items the base model answers right, overall and per task (when tasks are known)."""
    correct = np.asarray(is_correct, dtype=bool)
    out: dict = {
        "n": int(correct.size),
        "n_successful": int(correct.sum()),
        "share": float(correct.mean()) if correct.size else float("nan"),
    }
    if tasks is not None and any(t for t in tasks):
        groups: dict[str, list[bool]] = defaultdict(list)
        for ok, task in zip(correct, tasks):
            groups[str(task)].append(bool(ok))
        out["per_task"] = {t: {"n": len(v), "share": float(np.mean(v))} for t, v in sorted(groups.items())}
    return out


def alignment(embeddings: np.ndarray, routing: torch.Tensor, k: int = 5) -> dict:
    """Routing-embedding alignment: linear CKA and k-NN overlap@k, all tuned layers together and per layer."""
    flat = routing.reshape(routing.shape[0], -1)
    per_layer = [
        {
            "cka": linear_cka(embeddings, routing[:, i]),
            f"knn_overlap@{k}": knn_overlap(embeddings, routing[:, i : i + 1], k),
        }
        for i in range(routing.shape[1])
    ]
    n = routing.shape[0]
    return {
        "cka": linear_cka(embeddings, flat),
        f"knn_overlap@{k}": knn_overlap(embeddings, routing, k),
        f"knn_overlap@{k}_chance": min(k, n - 1) / max(n - 1, 1),
        "per_layer": per_layer,
    }


def correctness_signal(
    embeddings: np.ndarray,
    routing: torch.Tensor,
    is_correct: Sequence[bool],
    k: int = 10,
    folds: int = 5,
    seed: int = 0,
) -> dict:
    """Cross-validated ROC AUC of a k-NN classifier that predicts correctness from routing alone, and from
    embeddings alone. 0.5 is chance. ``None`` where a class has fewer items than folds."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    y = np.asarray(is_correct, dtype=int)
    if min(y.sum(), (1 - y).sum()) < folds:
        return {
            "auc_routing": None,
            "auc_embedding": None,
            "folds": folds,
            "k": k,
            "reason": f"fewer than {folds} items in a class",
        }
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    neighbours = min(k, int(len(y) * (folds - 1) / folds) - 1)

    def auc(x: np.ndarray, metric: str) -> dict:
        scores = cross_val_score(
            KNeighborsClassifier(n_neighbors=neighbours, metric=metric), x, y, cv=splitter, scoring="roc_auc"
        )
        return {"mean": float(scores.mean()), "sd": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0}

    flat = routing.reshape(routing.shape[0], -1).float().numpy()
    return {
        "auc_routing": auc(flat, "euclidean"),
        "auc_embedding": auc(np.asarray(embeddings), "cosine"),
        "folds": folds,
        "k": neighbours,
    }


def neighbour_distances(
    embeddings: np.ndarray, routing: torch.Tensor, successful: list[int], k: int = 3, sigma: float = 0.4
) -> np.ndarray:
    """Each item's kernel-weighted squared routing distance to its k nearest successful neighbours in
    embedding space (itself excluded): the manifold term RoMA starts from, per item."""
    graph = build_neighbour_graph(
        embeddings, successful, NeighbourSearch(k=k, sigma=sigma, dedupe_threshold=1.01)
    )
    flat = routing.reshape(routing.shape[0], -1).float()
    idx = graph.indices.clamp_min(0)
    sq = ((flat.unsqueeze(1) - flat[idx]) ** 2).sum(-1)
    return (graph.weights * sq * (graph.indices >= 0)).sum(1).numpy()


def room_to_move(
    embeddings: np.ndarray,
    routing: torch.Tensor,
    is_correct: Sequence[bool],
    k: int = 3,
    sigma: float = 0.4,
    permutations: int = 2000,
    seed: int = 0,
) -> dict:
    """Mean kernel-weighted routing distance to the successful neighbours, for failed and for successful
    items, and a two-sided permutation test of the difference (labels shuffled, distances fixed).
    A positive difference means failed items route unlike their successful neighbours: RoMA's term
    has something to pull on."""
    correct = np.asarray(is_correct, dtype=bool)
    successful = np.flatnonzero(correct).tolist()
    if len(successful) < 2 or correct.all():
        return {
            "failed_mean": None,
            "successful_mean": None,
            "difference": None,
            "p_value": None,
            "reason": "needs at least two successful items and one failed item",
        }
    d = neighbour_distances(embeddings, routing, successful, k, sigma)
    observed = d[~correct].mean() - d[correct].mean()
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(permutations):
        perm = rng.permutation(correct)
        hits += abs(d[~perm].mean() - d[perm].mean()) >= abs(observed)
    return {
        "failed_mean": float(d[~correct].mean()),
        "successful_mean": float(d[correct].mean()),
        "difference": float(observed),
        "p_value": (hits + 1) / (permutations + 1),
        "k": k,
        "sigma": sigma,
        "permutations": permutations,
    }


def layer_health(routing: torch.Tensor, top_k: int, layers: Sequence[int] | None = None) -> dict:
    """``manifold.health.routing_health`` as the report's columns, one value per layer: mean routing
    entropy (nats, and as a share of log E) and min/max share of top-k slots; and the collapse check's
    sentences (``collapse``), the same training logs."""
    e = routing.shape[-1]
    layers = list(range(routing.shape[1])) if layers is None else list(layers)
    health = routing_health(routing, top_k, layers)
    entropy = [health["entropy"][str(layer)] for layer in layers]
    return {
        "entropy": entropy,
        "entropy_share": [h / float(np.log(e)) for h in entropy],
        "utilisation_min": [health["utilisation"][str(layer)]["min"] for layer in layers],
        "utilisation_max": [health["utilisation"][str(layer)]["max"] for layer in layers],
        "experts": e,
        "top_k": top_k,
        "collapse": [sentence for _, _, sentence in collapse(health, e)],
    }


def _cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-12)


def oracle_direction(
    embeddings: np.ndarray,
    base_routing: torch.Tensor,
    oracle_routing: torch.Tensor,
    is_correct: Sequence[bool],
    fixed: Sequence[int],
    k: int = 3,
    sigma: float = 0.4,
    seed: int = 0,
) -> dict:
    """Does RoMA's pull point where the oracle went? For each item the oracle fixed (wrong at base,
    right with its oracle routing), compare the oracle's change ``d_i = r_oracle_i - r_i`` with RoMA's
    pull ``p_i = sum_j W_ij r_j - r_i`` towards its k successful neighbours (embedding space, the
    manifold term's gradient direction), by cosine, over all tuned layers concatenated.

    Reference: the cosine of ``d_i`` with the pull towards k successful items drawn at random. Also
    whether the oracle's changes are shared: the mean cosine of ``d_i`` and ``d_j`` for fixed items
    that are embedding neighbours (k nearest among the fixed), against random pairs of fixed items.
    """
    fixed = list(fixed)
    correct = np.asarray(is_correct, dtype=bool)
    successful = np.flatnonzero(correct).tolist()
    if len(fixed) < 2 or len(successful) < 2:
        return {"n_fixed": len(fixed), "reason": "needs at least two fixed items and two successful items"}
    flat = base_routing.reshape(base_routing.shape[0], -1).float()
    change = oracle_routing.reshape(oracle_routing.shape[0], -1).float()[fixed] - flat[fixed]
    graph = build_neighbour_graph(
        embeddings, successful, NeighbourSearch(k=k, sigma=sigma, dedupe_threshold=1.01)
    )
    idx, w = graph.indices[fixed].clamp_min(0), graph.weights[fixed] * (graph.indices[fixed] >= 0)
    pull = (w.unsqueeze(-1) * flat[idx]).sum(1) - flat[fixed]
    gen = torch.Generator().manual_seed(seed)
    rand = torch.tensor(successful)[torch.randint(len(successful), (len(fixed), k), generator=gen)]
    random_pull = flat[rand].mean(1) - flat[fixed]
    cos_pull, cos_random = _cosine_rows(change, pull), _cosine_rows(change, random_pull)
    cos_nbr, cos_any = _shared_changes(embeddings, fixed, change, k, gen)
    # How far the oracle moved, against how far the pull would move: same scale or not; and where.
    per_layer = (oracle_routing.float()[fixed] - base_routing.float()[fixed]).norm(dim=-1).mean(0)
    return {
        "change_norm_per_layer": [float(x) for x in per_layer],
        "n_fixed": len(fixed),
        "k": k,
        "sigma": sigma,
        "cos_change_pull": float(cos_pull.mean()),
        "share_positive": float((cos_pull > 0).float().mean()),
        "cos_change_random_pull": float(cos_random.mean()),
        "cos_change_neighbours": cos_nbr,
        "cos_change_random_pairs": cos_any,
        "change_norm": float(change.norm(dim=1).mean()),
        "pull_norm": float(pull.norm(dim=1).mean()),
    }


def _shared_changes(
    embeddings: np.ndarray, fixed: list[int], change: torch.Tensor, k: int, gen: torch.Generator
) -> tuple[float, float]:
    """Are the oracle's changes shared? The mean cosine of the changes of fixed items that are
    embedding neighbours (k nearest among the fixed), and of random pairs of fixed items (drawn
    from ``gen``)."""
    emb = torch.as_tensor(np.asarray(embeddings, dtype=np.float32)[fixed])
    sims = emb @ emb.T
    sims.fill_diagonal_(-float("inf"))
    kk = min(k, len(fixed) - 1)
    nbr = sims.topk(kk, dim=1).indices
    cos_nbr = _cosine_rows(change.unsqueeze(1).expand(-1, kk, -1), change[nbr]).mean().item()
    pairs = torch.randint(len(fixed), (len(fixed) * kk, 2), generator=gen)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    if len(pairs) == 0:  # few fixed items and every draw a self-pair: every ordered pair of two, not NaN
        pairs = torch.tensor([(i, j) for i in range(len(fixed)) for j in range(len(fixed)) if i != j])
    cos_any = _cosine_rows(change[pairs[:, 0]], change[pairs[:, 1]]).mean().item()
    return cos_nbr, cos_any


@dataclass(frozen=True)
class MeasureInputs:
    """What a measure may read: the routing store, its items' embeddings and the settings."""

    store: RoutingStore
    embeddings: np.ndarray  # (N, D), L2-normalised
    routing: torch.Tensor  # (N, L, E) float, the store's routing
    top_k: int  # the model's experts per token
    k: int  # successful neighbours, as `roma train`'s graph
    sigma: float  # its kernel width
    seed: int


@dataclass(frozen=True)
class Measure:
    """One registered measure: what it computes, the line it logs, and whether it needs both
    successful and failed items (skipped, with the reason in ``cannot_tell``, where one kind is missing)."""

    run: Callable[[MeasureInputs], dict]
    progress: str
    needs_both_kinds: bool = False


# Every measure of ``diagnose_routing``, in the report's order: name -> measure. ``success`` comes
# before them (it decides what can be told), the verdict after. Adding one is a function above, a
# line here and its section in ``report/diagnose.py``'s ``SECTIONS``.
MEASURES: dict[str, Measure] = {
    "alignment": Measure(lambda x: alignment(x.embeddings, x.routing), "alignment"),
    "routing_health": Measure(lambda x: layer_health(x.routing, x.top_k, x.store.layers), "routing health"),
    "correctness_signal": Measure(
        lambda x: correctness_signal(x.embeddings, x.routing, x.store.is_correct, seed=x.seed),
        "correctness signal (k-NN, 5-fold ROC AUC)",
        needs_both_kinds=True,
    ),
    "room_to_move": Measure(
        lambda x: room_to_move(
            x.embeddings, x.routing, x.store.is_correct, k=x.k, sigma=x.sigma, seed=x.seed
        ),
        "room to move (permutation test)",
        needs_both_kinds=True,
    ),
}
