"""RoMA training: the manifold term really trains the routers, the prefix cache is exact, only the
chosen routers change, runs are deterministic, and every regulariser variant works."""

from __future__ import annotations

import json
import typing

import pytest
import torch

from helpers.training import store_and_graph
from moe_roma.io.errors import RomaError
from moe_roma.methods.common.prefix import PrefixCache
from moe_roma.methods.roma.config import Regularizer, TrainConfig, train_config
from moe_roma.methods.roma.regularizers import REGULARIZERS
from moe_roma.methods.roma.trainer import RouterTrainer
from moe_roma.models.checkpoint import apply_router_checkpoint, load_router_checkpoint


def make_trainer(tmp_path, family="olmoe", scoring="letter", **cfg):
    model, tok, store, graph = store_and_graph(family, scoring=scoring)
    config = train_config(layers="last2", scoring=scoring, **{"schedule.batch_size": 4}, **cfg)
    return RouterTrainer(model, tok, store, config, tmp_path / "run", graph=graph, progress=False)


def batch_loss(trainer, items, use_cache, lam=0.8):
    out = trainer.forward_items(items, use_cache=use_cache)
    terms = trainer.regularizer_terms(items, out["routing"])
    return (out["task"] + lam * terms["reg"]).sum() / len(items), terms


@pytest.mark.parametrize("family", ["olmoe", "qwen2_moe", "deepseek_v3", "gpt_oss"])
@pytest.mark.parametrize("scoring", ["letter", "continuation"])
def test_prefix_cache_gives_the_same_loss_and_gradients_as_a_full_forward(tmp_path, family, scoring):
    trainer = make_trainer(tmp_path, family, scoring)
    assert trainer.first_layer > 0  # the last 2 of 4 layers: a real prefix is skipped
    trainer.cache = PrefixCache(trainer.first_layer)
    trainer.cache.fill(trainer.model, trainer.info, trainer.items, trainer.pad, 4, False)
    items = trainer.items[:5]
    grads = {}
    for use_cache in (False, True):
        trainer.model.zero_grad(set_to_none=True)
        loss, _ = batch_loss(trainer, items, use_cache)
        loss.backward()
        grads[use_cache] = (loss.detach(), [p.grad.clone() for p in trainer.params.values()])
    torch.testing.assert_close(grads[True][0], grads[False][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads[True][1], grads[False][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert any(g.abs().sum() > 0 for g in grads[True][1])


def test_manifold_gradient_is_nonzero_and_matches_finite_differences(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.model.set_experts_implementation("eager")  # grouped_mm has no float64 kernel
    trainer.model.double()
    items = trainer.items[:6]

    def manifold_only() -> torch.Tensor:
        out = trainer.forward_items(items, use_cache=False)
        return trainer.regularizer_terms(items, out["routing"].double())["manifold"].sum()

    trainer.model.zero_grad(set_to_none=True)
    manifold_only().backward()
    # The last tuned router reaches the loss only through float64 maths: a tight check. The earlier one
    # also acts through the experts, whose top-k weights OLMoE casts to float32: a looser step and tolerance.
    for (name, param), eps, rel in zip(trainer.params.items(), (1e-4, 1e-6), (2e-3, 1e-5)):
        grad = param.grad.clone()
        assert grad.abs().max() > 1e-6, "the manifold term must reach the routers"
        with torch.no_grad():
            for idx in [(0, 0), (1, 3), (5, 7), (7, 31)]:
                orig = param[idx].item()
                param[idx] = orig + eps
                up = manifold_only().item()
                param[idx] = orig - eps
                down = manifold_only().item()
                param[idx] = orig
                fd = (up - down) / (2 * eps)
                assert abs(fd - grad[idx].item()) <= 1e-9 + rel * grad.abs().max().item(), (
                    name,
                    idx,
                    fd,
                    grad[idx],
                )


def test_training_moves_only_the_chosen_routers_and_the_manifold_loss_falls(tmp_path):
    trainer = make_trainer(
        tmp_path,
        schedule={"epochs": 6, "warmup_ratio": 0.0},
        optimizer={"lr": 0.05},
        regularizer={"lam": 20.0, "lam_warmup_ratio": 0.0},
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    buffers = {n: b.clone() for n, b in trainer.model.named_buffers()}
    trainer.train()
    chosen = set(trainer.params)
    assert chosen == {"model.layers.2.mlp.gate.weight", "model.layers.3.mlp.gate.weight"}
    for name, p in trainer.model.named_parameters():
        if name in chosen:
            assert not torch.equal(p, before[name]), name
        else:
            assert torch.equal(p, before[name]), name
    for name, b in trainer.model.named_buffers():
        assert torch.equal(b, buffers[name]), name
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    per_epoch = {}
    for r in rows:
        per_epoch.setdefault(int(r["epoch"] - 1e-9), []).append(r["manifold_loss"])
    first, last = (
        sum(per_epoch[0]) / len(per_epoch[0]),
        sum(per_epoch[max(per_epoch)]) / len(per_epoch[max(per_epoch)]),
    )
    assert last < 0.5 * first, (first, last)
    for key in (
        "step",
        "epoch",
        "task_loss",
        "manifold_loss",
        "lambda",
        "lr",
        "router_grad_norm",
        "entropy",
        "utilisation",
        "topk_changed",
    ):
        assert key in rows[-1]
    assert set(rows[-1]["entropy"]) == {"2", "3"}


def test_checkpoint_holds_only_tuned_routers_and_applies_to_a_fresh_base(tmp_path):
    trainer = make_trainer(tmp_path, schedule={"epochs": 1}, optimizer={"lr": 0.01})
    trainer.train()
    config, tensors = load_router_checkpoint(tmp_path / "run")
    assert sorted(tensors) == sorted(trainer.params)
    assert (
        config["tuned_layers"] == [2, 3]
        and config["num_experts"] == 8
        and config["gate_function"] == "softmax"
    )
    assert config["hyperparameters"]["regularizer"] == "manifold" and config["seed"] == 0
    fresh, _, _, _ = store_and_graph()
    apply_router_checkpoint(fresh, tmp_path / "run")
    trained = dict(trainer.model.named_parameters())
    for name, p in fresh.named_parameters():
        assert torch.equal(p, trained[name]), name


def test_runs_are_deterministic(tmp_path):
    weights = []
    for run in ("a", "b"):
        trainer = make_trainer(
            tmp_path / run, router_dropout=0.1, schedule={"epochs": 2}, optimizer={"lr": 0.01}
        )
        trainer.train()
        weights.append([p.detach().clone() for p in trainer.params.values()])
    for a, b in zip(*weights):
        assert torch.equal(a, b)


def test_the_setting_offers_exactly_the_registered_regularizers():
    """``regularizer.name``'s choices (a Literal, so that reading a config needs no torch) are the
    registry's names: a regulariser added to one and not the other fails here."""
    assert typing.get_args(Regularizer) == tuple(REGULARIZERS)


@pytest.mark.parametrize("regularizer", REGULARIZERS)
def test_every_regularizer_trains_with_finite_losses(tmp_path, regularizer):
    trainer = make_trainer(
        tmp_path, schedule={"epochs": 1}, optimizer={"lr": 0.01}, regularizer={"name": regularizer}
    )
    result = trainer.train()
    assert result.steps == 4 and result.skipped_steps == 0
    last = result.final_metrics
    assert torch.isfinite(torch.tensor(last["task_loss"]))
    if regularizer == "none":
        assert last["reg_loss"] is None
    else:
        assert last["reg_loss"] is not None and last["reg_loss"] >= 0
    assert last["manifold_loss"] is not None  # logged for every variant, so runs can be compared


def test_empty_successful_set_is_refused_unless_allowed(tmp_path):
    model, tok, store, _ = store_and_graph()
    store.is_correct = [False] * len(store)
    with pytest.raises(RomaError, match="successful set is empty"):
        RouterTrainer(model, tok, store, train_config(layers="last2"), tmp_path / "x", progress=False)
    trainer = RouterTrainer(
        model,
        tok,
        store,
        train_config(layers="last2", allow_empty_successful=True, schedule={"epochs": 1, "batch_size": 8}),
        tmp_path / "y",
        progress=False,
    )
    assert trainer.regularizer == "none"
    trainer.train()


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optimizer: {lr: 0.001}\ngraph.k: 5\nregularizer: {name: l2}\n")
    flags = ({"schedule.epochs": "2"}, {"schedule.epochs": "--schedule.epochs"})
    cfg = TrainConfig.from_command_line(
        path, flags, ["graph.k=7", "regularizer.lam_final=0.2", "graph.epsilon=none"]
    )
    assert (
        cfg.optimizer.lr,
        cfg.graph.k,
        cfg.regularizer.name,
        cfg.schedule.epochs,
        cfg.regularizer.lam_final,
        cfg.graph.epsilon,
    ) == (0.001, 7, "l2", 2, 0.2, None)
    for bad in (["graph.k=x"], ["nope=1"], ["regularizer.name=magic"], ["graph.k"]):
        with pytest.raises(RomaError):
            TrainConfig.from_command_line(overrides=bad)


def test_half_precision_model_trains_fp32_routers_under_autocast(tmp_path):
    trainer = make_trainer(tmp_path, schedule={"epochs": 1}, optimizer={"lr": 0.01})
    trainer.model.to(torch.bfloat16)
    seen = {}

    def spy(module, args, output):
        seen["dtype"] = module.weight.dtype

    handle = trainer.info.routers[3].module.register_forward_hook(spy)
    result = trainer.train()
    handle.remove()
    assert seen["dtype"] == torch.float32, "routers train as fp32 master weights"
    assert result.skipped_steps == 0 and torch.isfinite(torch.tensor(result.final_metrics["task_loss"]))
    assert all(p.dtype == torch.bfloat16 for p in trainer.model.parameters()), (
        "back to the model's dtype after"
    )
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "run" / "router_weights.safetensors")
    assert all(t.dtype == torch.float32 for t in saved.values())


def test_partial_scoring_items_score_the_fixed_continuation_after_each_context(tmp_path):
    from helpers.tiny_models import build_tiny_model, build_tiny_tokenizer
    from moe_roma.data.example import MCExample
    from moe_roma.methods.common.batches import build_items
    from moe_roma.models.inputs import encode_pair
    from moe_roma.routing.collect import collect_routing

    tok = build_tiny_tokenizer()
    model = build_tiny_model("olmoe")
    examples = [
        MCExample(f"w{i}", "the cat _ big", ("the cat is", "the dog is"), i % 2, continuation="big .")
        for i in range(6)
    ]
    store, _ = collect_routing(model, tok, examples, layers="last2", scoring="continuation", progress=False)
    assert store.continuations == ["big ."] * 6
    items = build_items(store, tok, "continuation", 64)
    ctx, cont = encode_pair(tok, "the dog is", " big .")
    assert items[0].seqs[1] == ctx + cont and items[0].cont_lens == [len(cont)] * 2
    store.is_correct = [True, False] * 3
    trainer = RouterTrainer(
        model,
        tok,
        store,
        train_config(
            layers="last2",
            scoring="continuation",
            schedule={"epochs": 1, "batch_size": 3},
            graph={"dedupe_threshold": 1.01},
        ),
        tmp_path / "w",
        progress=False,
    )
    assert trainer.train().skipped_steps == 0


def test_gradient_checkpointing_gives_the_same_routers(tmp_path):
    weights = []
    for flag in (False, True):
        trainer = make_trainer(
            tmp_path / str(flag),
            schedule={"epochs": 1},
            optimizer={"lr": 0.01},
            runtime={"gradient_checkpointing": flag},
        )
        trainer.train()
        weights.append([p.detach().clone() for p in trainer.params.values()])
        assert not trainer.model.training and not trainer.model.is_gradient_checkpointing
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_task_weight_zero_trains_with_the_regulariser_alone(tmp_path):
    """With the task loss weighed 0 and lambda 0 nothing moves the routers; with the task loss on, they do."""
    settings = {
        "schedule.epochs": 1,
        "optimizer.lr": 1e-2,
        "optimizer.weight_decay": 0.0,
        "regularizer.lam": 0.0,
        "regularizer.lam_warmup_ratio": 0.0,
    }
    off = make_trainer(tmp_path / "off", **settings, **{"regularizer.task_weight": 0.0})
    before = [p.detach().clone() for p in off.params.values()]
    result = off.train()
    assert result.steps == 4 and all(torch.equal(a, p) for a, p in zip(before, off.params.values()))
    on = make_trainer(tmp_path / "on", **settings)
    before = [p.detach().clone() for p in on.params.values()]
    on.train()
    assert not all(torch.equal(a, p) for a, p in zip(before, on.params.values()))
    with pytest.raises(RomaError, match="task_weight 0 with regularizer none"):
        train_config(regularizer={"task_weight": 0.0, "name": "none"})
