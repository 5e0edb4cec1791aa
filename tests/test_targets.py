"""Extensions of the paper's targets: oracle routing for the items the base gets wrong; self-neighbours."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.examples import make_examples
from helpers.tiny_models import build_tiny_tokenizer, routed_model
from moe_roma.manifold.graph import NeighbourSearch, build_neighbour_graph
from moe_roma.methods.c3po import forward_with_targets
from moe_roma.methods.common.items import prepare_items
from moe_roma.methods.roma.config import train_config
from moe_roma.methods.roma.targets import with_oracle_targets
from moe_roma.methods.roma.trainer import RouterTrainer
from moe_roma.models.discovery import discover_routers
from moe_roma.routing.collect import collect_routing


@pytest.fixture(scope="module")
def collected():
    model = routed_model("olmoe", [2, 3])
    tok = build_tiny_tokenizer()
    store, _ = collect_routing(
        model, tok, make_examples(24), layers="last2", scoring="letter", progress=False
    )
    return model, tok, store


def test_oracle_targets_are_routings_that_answer_right(collected):
    model, tok, store = collected
    info = discover_routers(model)
    wrong = [i for i, ok in enumerate(store.is_correct) if not ok]
    assert wrong, "the tiny model must get some items wrong for this test to say anything"
    out = with_oracle_targets(model, tok, store, store.layers, info, steps=30)
    fixed = [store.ids.index(i) for i in out.meta["oracle_fixed"]]
    assert fixed and set(fixed) <= set(wrong)
    assert out.meta["targets"] == "oracle" and out.meta["base_correct"] == store.is_correct
    assert out.successful == sorted(set(store.successful) | set(fixed))
    # Items the base answers right keep their base routing as target; the store passed in is untouched.
    right = store.successful
    torch.testing.assert_close(out.routing[right], store.routing[right])
    assert not torch.equal(out.routing[fixed], store.routing[fixed])
    # Each oracle target is a routing that answers its item right: set it exactly and score the item.
    data = prepare_items(store, tok, "letter", store.layers, None)
    items = [data.items[i] for i in fixed]
    with torch.no_grad():
        scores = forward_with_targets(model, info, store.layers, data, items, out.routing[fixed])["scores"]
    answers = torch.tensor([store.answer_index[i] for i in fixed])
    assert torch.equal(scores.argmax(-1), answers)
    assert with_oracle_targets(model, tok, out, store.layers, info) is out  # idempotent


def test_training_with_oracle_targets_uses_the_larger_successful_set(collected, tmp_path):
    model, tok, store = collected
    config = train_config(
        layers="last2",
        schedule={"epochs": 1, "batch_size": 8},
        optimizer={"lr": 0.01},
        regularizer={"targets": "oracle", "oracle_steps": 30},
        graph={"dedupe_threshold": 1.01},
    )
    trainer = RouterTrainer(model, tok, store, config, tmp_path / "run", progress=False)
    assert len(trainer.store.successful) > len(store.successful)
    assert trainer.graph is not None and (trainer.graph.indices >= 0).any()
    result = trainer.train()
    assert result.steps == 3 and np.isfinite(result.final_metrics["manifold_loss"])


def test_include_self_makes_each_successful_sample_its_own_first_neighbour():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(10, 6)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    successful = [0, 2, 3, 5, 6, 9]
    plain = build_neighbour_graph(emb, successful, NeighbourSearch(k=3))
    with_self = build_neighbour_graph(emb, successful, NeighbourSearch(k=3, include_self=True))
    for i in range(10):
        if i in successful:
            assert with_self.indices[i].tolist() == [i, *plain.indices[i, :2].tolist()]
            assert with_self.similarities[i, 0] == pytest.approx(1.0)
            assert (
                with_self.weights[i, 0] == with_self.weights[i].max()
            )  # distance 0: the largest kernel weight
        else:
            assert torch.equal(with_self.indices[i], plain.indices[i])
