"""The diagnose measurements on constructed data where the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moe_roma.diagnose.measures import (
    alignment,
    correctness_signal,
    layer_health,
    oracle_direction,
    room_to_move,
    success,
)


def _clustered(n_per: int = 40, seed: int = 0):
    """Two tasks; each task's items share an embedding direction and (mostly) a routing."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[:2]
    emb = np.concatenate([c + 0.05 * rng.normal(size=(n_per, 8)) for c in centres]).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    routing = torch.zeros(2 * n_per, 2, 4)
    routing[:n_per, :, 0] = 1.0
    routing[n_per:, :, 1] = 1.0
    routing = 0.9 * routing + 0.1 * torch.rand(2 * n_per, 2, 4, generator=torch.Generator().manual_seed(seed))
    return emb, routing / routing.sum(-1, keepdim=True)


def test_success_counts_overall_and_per_task():
    out = success([True, False, True, True], ["a", "a", "b", "b"])
    assert out["share"] == 0.75 and out["n_successful"] == 3
    assert out["per_task"] == {"a": {"n": 2, "share": 0.5}, "b": {"n": 2, "share": 1.0}}


def test_alignment_is_high_when_routing_follows_the_tasks_and_low_when_shuffled():
    emb, routing = _clustered()
    aligned = alignment(emb, routing, k=5)
    shuffled = alignment(
        emb, routing[torch.randperm(len(routing), generator=torch.Generator().manual_seed(1))], k=5
    )
    assert aligned["cka"] > 0.8 > 0.2 > shuffled["cka"]
    assert aligned["knn_overlap@5"] > shuffled["knn_overlap@5"]
    assert len(aligned["per_layer"]) == 2


def test_correctness_signal_finds_routing_that_decides_correctness():
    emb, routing = _clustered()
    # Correct exactly when routed to expert 0 in layer 0: routing predicts it, and so do the embeddings here.
    correct = (routing[:, 0].argmax(-1) == 0).tolist()
    out = correctness_signal(emb, routing, correct)
    assert out["auc_routing"]["mean"] > 0.95
    rng = np.random.default_rng(3)
    noise = correctness_signal(emb, routing, rng.random(len(correct)) < 0.5)
    assert 0.25 < noise["auc_routing"]["mean"] < 0.75


def test_room_to_move_sees_failed_items_routed_unlike_their_neighbours():
    emb, routing = _clustered()
    correct = np.ones(len(routing), dtype=bool)
    correct[::5] = False
    moved = routing.clone()
    moved[~torch.as_tensor(correct)] = moved[~torch.as_tensor(correct)].flip(
        -1
    )  # failed items route elsewhere
    out = room_to_move(emb, moved, correct, permutations=500)
    assert out["difference"] > 0 and out["p_value"] < 0.01
    same = room_to_move(emb, routing, correct, permutations=500)
    assert same["p_value"] > 0.01 or abs(same["difference"]) < out["difference"] / 5


@pytest.mark.parametrize("correct", [[True] * 10, [False] * 10])
def test_room_to_move_cannot_tell_without_both_kinds(correct):
    emb, routing = _clustered(5)
    out = room_to_move(emb, routing, correct)
    assert out["difference"] is None and "reason" in out


def test_routing_health_reports_entropy_and_utilisation_per_layer():
    routing = torch.full((10, 3, 4), 0.25)
    out = layer_health(routing, top_k=2)
    assert out["entropy_share"] == pytest.approx([1.0] * 3)
    assert len(out["utilisation_max"]) == 3


def test_oracle_direction_tells_a_pull_towards_the_oracle_from_one_away_from_it():
    emb, routing = _clustered()
    correct = np.ones(len(routing), dtype=bool)
    correct[::5] = False
    failed = np.flatnonzero(~correct).tolist()
    moved = routing.clone()
    moved[failed] = moved[failed].flip(-1)  # failed items route unlike their task
    # An oracle that sends them back to their task's routing: exactly where the neighbours pull.
    towards = oracle_direction(emb, moved, routing, correct, failed)
    assert towards["n_fixed"] == len(failed) and len(towards["change_norm_per_layer"]) == routing.shape[1]
    assert towards["cos_change_pull"] > 0.9 and towards["share_positive"] == 1.0
    assert towards["cos_change_neighbours"] > 0.9
    # An oracle that moves them further away, each in its own random direction: no agreement.
    noise = torch.randn(routing.shape, generator=torch.Generator().manual_seed(4))
    away = oracle_direction(emb, moved, moved + noise, correct, failed)
    assert away["cos_change_pull"] < 0.5 and abs(away["cos_change_neighbours"]) < 0.3
    assert oracle_direction(emb, moved, routing, correct, failed[:1])["reason"]
    # Two fixed items: the random pairs may all be self-pairs; the figure is still a number, never NaN
    # (a NaN made `roma diagnose --oracle 8` fail at its last step, writing report.json).
    import json
    import math

    for seed in range(20):
        two = oracle_direction(emb, moved, routing, correct, failed[:2], seed=seed)
        assert all(math.isfinite(v) for v in two.values() if isinstance(v, float)), (seed, two)
        json.dumps(two, allow_nan=False)


def _knn_overlap_reference(emb: np.ndarray, routing: torch.Tensor, k: int) -> float:
    """Brute force over full n x n matrices, one item at a time."""
    r = routing.reshape(len(routing), -1).double().numpy()
    e = emb.astype(np.float64)
    total = 0
    for i in range(len(e)):
        es, rd = e @ e[i], ((r - r[i]) ** 2).sum(1)
        es[i], rd[i] = -np.inf, np.inf
        total += len(set(np.argsort(-es)[:k]) & set(np.argsort(rd)[:k]))
    return total / (len(e) * k)


def test_knn_overlap_in_chunks_and_on_a_sample_matches_brute_force():
    from moe_roma.manifold.metrics import knn_overlap

    emb, routing = _clustered(n_per=60)
    exact = _knn_overlap_reference(emb, routing, 5)
    assert knn_overlap(emb, routing, 5, chunk=7) == pytest.approx(exact)
    # On a sample of queries the estimate stays within a few standard errors of the exact mean.
    sampled = knn_overlap(emb, routing, 5, max_queries=80, chunk=16)
    assert sampled != exact and abs(sampled - exact) < 4 * 0.5 / np.sqrt(80)
