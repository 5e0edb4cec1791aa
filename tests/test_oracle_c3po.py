"""Oracle routing (upper bound) and the C3PO test-time re-mixing baseline, on tiny random MoE models.

A freshly initialised tiny model's experts add almost nothing to the residual stream (weights of
std 0.02), so no routing change can flip an answer, and its routers score all experts nearly alike;
the fixtures scale the tuned layers' routed experts and routers by 10, so that routing matters and
is peaked, as in a trained model.
"""

from __future__ import annotations

import math

import pytest
import torch

from helpers.examples import make_examples
from helpers.tiny_models import build_tiny_tokenizer, routed_model
from moe_roma.io.errors import RomaError
from moe_roma.manifold.graph import NeighbourSearch, build_neighbour_graph
from moe_roma.methods.c3po import c3po, forward_with_targets
from moe_roma.methods.common.forward import items_forward
from moe_roma.methods.common.items import prepare_items, suffix_fraction
from moe_roma.methods.oracle import oracle_routing
from moe_roma.models.discovery import discover_routers
from moe_roma.routing.collect import collect_routing

FAMILIES = ["olmoe", "deepseek_v3"]  # softmax and sigmoid routing
TUNED = [2, 3]


class Setup:
    def __init__(self, family: str, scoring: str) -> None:
        self.family = family
        self.model = routed_model(family, TUNED)
        self.tok = build_tiny_tokenizer()
        self.info = discover_routers(self.model)
        examples = make_examples(32)
        self.ref, _ = collect_routing(
            self.model, self.tok, examples[:20], layers="last2", scoring=scoring, progress=False
        )
        self.eval, _ = collect_routing(
            self.model, self.tok, examples[20:], layers="last2", scoring=scoring, progress=False
        )
        emb = torch.nn.functional.normalize(
            torch.randn(32, 8, generator=torch.Generator().manual_seed(0)), dim=1
        )
        self.ref_emb, self.eval_emb = emb[:20].numpy(), emb[20:].numpy()


_CACHE: dict[tuple[str, str], Setup] = {}


def setup_for(family: str, scoring: str = "letter") -> Setup:
    if (family, scoring) not in _CACHE:
        _CACHE[(family, scoring)] = Setup(family, scoring)
    return _CACHE[(family, scoring)]


# --------------------------------------------------------------------------------------------------
# Oracle routing


@pytest.mark.parametrize(
    ("family", "scoring"), [("olmoe", "letter"), ("deepseek_v3", "letter"), ("olmoe", "continuation")]
)
@pytest.mark.parametrize("prefix_cache", [True, False])
def test_oracle_never_hurts_stops_early_and_counts_its_passes(family, scoring, prefix_cache):
    s = setup_for(family, scoring)
    steps = 20
    r = oracle_routing(
        s.model, s.tok, s.eval, steps=steps, batch_size=64, prefix_cache=prefix_cache, progress=False
    )
    assert r.layers == TUNED and r.store_disagreements == 0
    assert r.correct_before == s.eval.is_correct and r.predictions_before == s.eval.model_answer
    assert r.accuracy >= r.base_accuracy and r.gap >= 0
    assert r.n_fixed > 0  # routing alone fixes some wrong answers of this model
    for i in range(len(r.ids)):
        if r.correct_before[i]:  # right at step 0: counted right, never changed
            assert r.correct_after[i] and r.steps_used[i] == 0 and not r.offsets[i].any()
        elif r.correct_after[i]:  # stopped at the first right forward
            assert 1 <= r.steps_used[i] <= steps and r.offsets[i].abs().sum() > 0
        else:
            assert r.steps_used[i] == steps
    # One forward per item per step until it stops; a backward runs over the whole batch still
    # being optimised (items that just became right included) whenever some item is still wrong.
    used = r.steps_used
    assert r.passes.forwards == sum(u + 1 for u in used)
    expected_backwards = sum(
        sum(u >= step for u in used) for step in range(steps) if any(u > step for u in used)
    )
    assert r.passes.backwards == expected_backwards
    n = len(r.ids)
    frac = suffix_fraction(s.info, TUNED) if prefix_cache else 1.0
    assert r.passes.prefix_fills == (n if prefix_cache else 0)
    expected = (n * (1 - frac) if prefix_cache else 0) + (r.passes.forwards + 2 * r.passes.backwards) * frac
    assert math.isclose(r.passes.cost_vs_base * n, expected, rel_tol=1e-9)
    assert "oracle" in r.line() and r.to_dict()["n"] == n


@pytest.mark.parametrize("family", FAMILIES)
def test_oracle_with_zero_steps_is_the_base_model(family):
    s = setup_for(family)
    r = oracle_routing(s.model, s.tok, s.eval, steps=0, progress=False)
    assert r.predictions_after == r.predictions_before == s.eval.model_answer
    assert r.accuracy == r.base_accuracy == s.eval.accuracy and r.gap == 0
    assert r.passes.forwards == len(r.ids) and r.passes.backwards == 0 and r.passes.extra_forwards == 0
    assert not r.offsets.any()


def test_oracle_leaves_the_model_as_it_found_it():
    s = setup_for("olmoe")
    s.model.train()
    flags = [p.requires_grad for p in s.model.parameters()]
    before = [p.detach().clone() for p in s.model.parameters()]
    oracle_routing(s.model, s.tok, s.eval, steps=3, progress=False)
    assert s.model.training and [p.requires_grad for p in s.model.parameters()] == flags
    assert all(p.grad is None for p in s.model.parameters())
    assert all(torch.equal(p, b) for p, b in zip(s.model.parameters(), before))
    s.model.eval()


def test_oracle_refuses_a_store_collected_with_another_scoring():
    s = setup_for("olmoe")
    with pytest.raises(RomaError, match="collected with 'letter' scoring"):
        oracle_routing(s.model, s.tok, s.eval, task_loss="continuation", progress=False)


# --------------------------------------------------------------------------------------------------
# C3PO


@pytest.mark.parametrize("family", FAMILIES)
def test_routing_targets_are_applied_exactly_in_every_tuned_layer(family):
    s = setup_for(family)
    data = prepare_items(s.eval, s.tok, "letter", TUNED, None)
    items = data.items[:5]
    target = torch.softmax(
        3 * torch.randn(5, 2, s.info.num_experts, generator=torch.Generator().manual_seed(1)), -1
    )
    with torch.no_grad():
        out = forward_with_targets(s.model, s.info, TUNED, data, items, target)
    # Layer 3's input changed through layer 2's re-mixing, and still reaches its target.
    torch.testing.assert_close(out["routing"], target, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_c3po_with_a_equal_1_is_exactly_the_base_model(family):
    s = setup_for(family)
    r = c3po(s.model, s.tok, s.ref, s.ref_emb, s.eval, s.eval_emb, alphas=[1.0], progress=False)
    assert r.predictions == r.predictions_base == s.eval.model_answer
    assert r.accuracy == r.base_accuracy == s.eval.accuracy and not any(r.changed)
    assert torch.equal(r.routing, r.routing_base)
    torch.testing.assert_close(r.routing_base, s.eval.routing, rtol=1e-4, atol=1e-6)
    assert r.passes.forwards == len(r.ids) and r.passes.extra_forwards == 0 and r.passes.cost_vs_base == 1.0


def _expected_neighbourhood(s: Setup, k: int = 3):
    graph = build_neighbour_graph(
        s.ref_emb,
        s.ref.successful,
        NeighbourSearch(k=k, sigma=0.4, dedupe_threshold=0.95),
        queries=s.eval_emb,
    )
    mean = torch.einsum("nk,nkle->nle", graph.weights, s.ref.routing[graph.indices.clamp_min(0)])
    return graph, mean


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("a", [0.0, 0.5])
def test_c3po_kernel_regression_applies_a_w_plus_1_minus_a_kernel_mean(family, a):
    s = setup_for(family)
    r = c3po(s.model, s.tok, s.ref, s.ref_emb, s.eval, s.eval_emb, alphas=[a], progress=False)
    graph, mean = _expected_neighbourhood(s)
    assert torch.equal(r.neighbours, graph.indices)
    has = graph.has_neighbours()
    assert r.changed == has.tolist() and has.any()
    w = s.eval.routing
    expected = torch.where(has[:, None, None], a * w + (1 - a) * mean, w)
    # r.routing is what RoutingCapture recorded in the final pass, in both tuned layers.
    torch.testing.assert_close(r.routing, expected, rtol=1e-3, atol=1e-5)
    moved = has.nonzero().flatten()
    assert (
        (r.routing[moved] - mean[moved]).norm(dim=-1) < (w[moved] - mean[moved]).norm(dim=-1) + 1e-6
    ).all()
    # A single a needs no selection: the base pass plus one pass per re-mixed item.
    assert r.passes.forwards == len(r.ids) + int(has.sum()) and r.passes.backwards == 0
    assert all(x == a for x, c in zip(r.alphas, r.changed) if c)


@pytest.mark.parametrize("family", FAMILIES)
def test_c3po_kernel_picks_a_by_the_neighbours_own_kernel_weighted_loss(family):
    s = setup_for(family)
    alphas = [0.0, 0.5, 1.0]
    r = c3po(s.model, s.tok, s.ref, s.ref_emb, s.eval, s.eval_emb, alphas=alphas, progress=False)
    graph, _ = _expected_neighbourhood(s)
    # Each neighbour j re-mixed with ITS neighbours among the successful references (itself excluded).
    ref_graph = build_neighbour_graph(
        s.ref_emb, s.ref.successful, NeighbourSearch(k=3, sigma=0.4, dedupe_threshold=0.95)
    )
    data = prepare_items(s.ref, s.tok, "letter", TUNED, None, max_choices=4)
    needed = sorted(set(graph.indices[graph.indices >= 0].tolist()))
    loss = {}
    for j in needed:
        w = s.ref.routing[j]
        idx, wt = ref_graph.indices[j], ref_graph.weights[j]
        own_mean = (wt[:, None, None] * s.ref.routing[idx.clamp_min(0)]).sum(0) if (idx >= 0).any() else w
        for a in alphas:
            with torch.no_grad():
                out = forward_with_targets(
                    s.model, s.info, TUNED, data, [data.items[j]], (a * w + (1 - a) * own_mean)[None]
                )
            loss[j, a] = float(out["task"][0])
    for i in range(len(r.ids)):
        nb = [(j, w) for j, w in zip(graph.indices[i].tolist(), graph.weights[i].tolist()) if j >= 0]
        if not nb:
            assert not r.changed[i]
            continue
        objective = {a: sum(w * loss[j, a] for j, w in nb) for a in alphas}
        best = min(objective.values())
        # The chosen a attains the minimum (up to batching round-off); ties go to the larger a.
        assert objective[r.alphas[i]] <= best + 1e-5
        assert r.changed[i] == (r.alphas[i] < 1.0)
    own_has = ref_graph.has_neighbours()
    selection = sum(len(alphas) if own_has[j] else 1 for j in needed)
    assert r.passes.forwards == len(r.ids) + selection + sum(r.changed)
    assert r.passes.extra_forwards == selection + sum(r.changed)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("variable", ["replace", "offset"])
def test_c3po_ngd_counts_its_passes(family, variable):
    s = setup_for(family)
    steps = 4
    r = c3po(
        s.model,
        s.tok,
        s.ref,
        s.ref_emb,
        s.eval,
        s.eval_emb,
        mode="ngd",
        ngd_variable=variable,
        ngd_steps=steps,
        ngd_lr=0.2,
        progress=False,
    )
    graph, _ = _expected_neighbourhood(s)
    links = int((graph.indices >= 0).sum())
    has = graph.has_neighbours()
    assert r.mode == f"ngd-{variable}" and r.changed == has.tolist()
    # Base pass, then per step one forward and one backward per (item, neighbour) link, then the final pass.
    assert r.passes.forwards == len(r.ids) + steps * links + int(has.sum())
    assert r.passes.backwards == steps * links
    assert math.isclose(r.passes.cost_vs_base, (r.passes.forwards + 2 * r.passes.backwards) / len(r.ids))
    if variable == "replace":  # the item runs with exactly the optimised omega
        torch.testing.assert_close(r.routing, r.ngd_solution, rtol=1e-3, atol=1e-5)


def _neighbour_objective(s: Setup, data, nb, variable: str, solution: torch.Tensor) -> float:
    """sum_j W_ij loss_j with neighbour j run under the item's omega (replace) or offsets delta (offset)."""
    items = [data.items[j] for j, _ in nb]
    wts = torch.tensor([w for _, w in nb])
    sol = solution.expand(len(nb), -1, -1)
    with torch.no_grad():
        if variable == "replace":
            out = forward_with_targets(s.model, s.info, TUNED, data, items, sol)
        else:
            out = items_forward(
                s.model,
                s.info,
                TUNED,
                items,
                data.pad,
                "letter",
                data.letter_ids,
                offsets={layer: sol[:, li] for li, layer in enumerate(TUNED)},
            )
    return float((wts * out["task"]).sum())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("variable", ["replace", "offset"])
def test_c3po_ngd_step_descends_the_neighbours_kernel_weighted_loss(family, variable):
    # Top-k selection makes the loss piecewise smooth, so only a small first step is sure to descend.
    s = setup_for(family)
    r = c3po(
        s.model,
        s.tok,
        s.ref,
        s.ref_emb,
        s.eval,
        s.eval_emb,
        mode="ngd",
        ngd_variable=variable,
        ngd_steps=1,
        ngd_lr=1e-3,
        progress=False,
    )
    graph, _ = _expected_neighbourhood(s)
    data = prepare_items(s.ref, s.tok, "letter", TUNED, None, max_choices=4)
    for i in graph.has_neighbours().nonzero().flatten().tolist():
        nb = [(j, w) for j, w in zip(graph.indices[i].tolist(), graph.weights[i].tolist()) if j >= 0]
        start = r.routing_base[i] if variable == "replace" else torch.zeros_like(r.routing_base[i])
        assert _neighbour_objective(s, data, nb, variable, r.ngd_solution[i]) < _neighbour_objective(
            s, data, nb, variable, start
        )


def test_c3po_ngd_with_no_steps_keeps_the_base_routing():
    s = setup_for("olmoe")
    r = c3po(s.model, s.tok, s.ref, s.ref_emb, s.eval, s.eval_emb, mode="ngd", ngd_steps=0, progress=False)
    torch.testing.assert_close(r.routing, r.routing_base, rtol=1e-3, atol=1e-5)
    assert r.passes.backwards == 0 and r.passes.forwards == len(r.ids) + sum(r.changed)


def test_c3po_near_duplicates_are_never_neighbours_and_prefix_cache_is_exact():
    s = setup_for("olmoe")
    # Evaluation items identical to reference items: the 0.95 guard must drop those references.
    ev_emb = s.ref_emb[:12].copy()
    r = c3po(s.model, s.tok, s.ref, s.ref_emb, s.eval, ev_emb, alphas=[0.0, 1.0], progress=False)
    for i in range(12):
        assert i not in r.neighbours[i].tolist()
    cached = c3po(
        s.model, s.tok, s.ref, s.ref_emb, s.eval, ev_emb, alphas=[0.0, 1.0], prefix_cache=True, progress=False
    )
    assert cached.alphas == r.alphas and cached.predictions == r.predictions
    assert cached.passes.forwards == r.passes.forwards and cached.passes.prefix_fills > 0
    assert cached.passes.cost_vs_base < r.passes.cost_vs_base


def test_c3po_refuses_bad_settings():
    s = setup_for("olmoe")
    with pytest.raises(RomaError, match="mode"):
        c3po(s.model, s.tok, s.ref, s.ref_emb, s.eval, s.eval_emb, mode="mode-finding", progress=False)
    with pytest.raises(RomaError, match="alphas"):
        c3po(s.model, s.tok, s.ref, s.ref_emb, s.eval, s.eval_emb, alphas=[1.5], progress=False)
    with pytest.raises(RomaError, match="embedding"):
        c3po(s.model, s.tok, s.ref, s.ref_emb[:5], s.eval, s.eval_emb, progress=False)
