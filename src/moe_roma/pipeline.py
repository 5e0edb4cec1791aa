"""The method comparison engine behind ``roma demo`` and ``roma experiment``.

One base model, one training set, several evaluation splits: collect the base routing once, then
for every seed and method restore the base routers, train (or not), and evaluate every split.
Every result is a row ``{"method", "split", "seed", "accuracy", "n", ...}``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma import __version__
from moe_roma.data.example import MCExample
from moe_roma.eval.scoring import evaluate
from moe_roma.manifold.graph import GraphConfig, NeighbourGraph, neighbour_graph_for_store
from moe_roma.models.discovery import MoEInfo, discover_routers
from moe_roma.routing.collect import collect_routing
from moe_roma.routing.store import RoutingStore, save_routing_store
from moe_roma.train.config import TrainConfig
from moe_roma.train.trainer import RouterTrainer, TrainResult


@dataclass
class Method:
    """A row label and how to produce it: ``base`` (no change) or ``train`` with config overrides;
    other kinds (``oracle``, ``c3po``) are registered in ``METHOD_KINDS``."""

    name: str
    kind: str = "train"
    overrides: dict = field(default_factory=dict)


@dataclass
class RunContext:
    """What a method runner may use."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    info: MoEInfo
    store: RoutingStore
    splits: dict[str, list[MCExample]]
    train_config: TrainConfig
    scoring: str
    batch_size: int
    out_dir: Path
    progress: bool
    graphs: dict[str, NeighbourGraph] = field(default_factory=dict)
    embeddings: dict[str, object] = field(default_factory=dict)


def graph_for(ctx: RunContext, config: TrainConfig) -> NeighbourGraph | None:
    """The neighbour graph for these settings, built once and shared by every run that uses it."""
    if not ctx.store.successful:
        return None
    gcfg = GraphConfig(
        k=config.k, epsilon=config.epsilon, sigma=config.sigma, dedupe_threshold=config.dedupe_threshold,
        random=config.random_neighbours, seed=config.seed if config.random_neighbours else 0,
    )  # fmt: skip
    key = hashlib.sha256(json.dumps([gcfg.__dict__, config.embedder], sort_keys=True).encode()).hexdigest()[:16]
    if key not in ctx.graphs:
        path = ctx.out_dir / "graphs" / f"{key}.safetensors"
        ctx.graphs[key], ctx.embeddings["train"] = neighbour_graph_for_store(ctx.store, gcfg, config.embedder, path)
    return ctx.graphs[key]


def evaluate_splits(ctx: RunContext) -> dict[str, dict]:
    out = {}
    for split, examples in ctx.splits.items():
        result = evaluate(
            ctx.model, ctx.tokenizer, examples, scoring=ctx.scoring, batch_size=ctx.batch_size, progress=False
        )
        s = result.summary()
        out[split] = {
            "accuracy": s["acc"], "n": s["n"], "ci": list(s["acc_ci"]) if s.get("acc_ci") else None,
            "acc_norm": s.get("acc_norm"), "correct": [it.correct for it in result.scored_items],
            "tasks": {t: v.get("acc") for t, v in s.get("tasks", {}).items()},
        }  # fmt: skip
    return out


def run_base(ctx: RunContext, method: Method, seed: int) -> dict:
    return {"splits": evaluate_splits(ctx)}


def run_train(ctx: RunContext, method: Method, seed: int) -> dict:
    config = TrainConfig(**{**ctx.train_config.to_dict(), **method.overrides, "seed": seed}).validate()
    run_dir = ctx.out_dir / "runs" / method.name / f"seed{seed}"
    trainer = RouterTrainer(
        ctx.model, ctx.tokenizer, ctx.store, config, run_dir, graph=graph_for(ctx, config), progress=ctx.progress
    )
    result: TrainResult = trainer.train()
    return {"splits": evaluate_splits(ctx), "train": {"seconds": result.seconds, "steps": result.steps},
            "run_dir": str(run_dir), "layers": result.tuned_layers}  # fmt: skip


# Kinds of method; ``roma experiment`` registers the baselines that need more machinery.
METHOD_KINDS: dict[str, Callable[[RunContext, Method, int], dict]] = {"base": run_base, "train": run_train}


def router_snapshot(model: PreTrainedModel, info: MoEInfo) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {n: params[n].detach().clone() for r in info.routers.values() for n in r.parameter_names}


def restore_routers(model: PreTrainedModel, snapshot: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in snapshot.items():
            params[name].data = value.clone().to(params[name].dtype)
            params[name].requires_grad_(False)


@dataclass
class Comparison:
    """Run ``methods`` x ``seeds`` and collect rows.

    >>> rows = Comparison(model, tok, train, splits, methods, [0, 1, 2], TrainConfig(), "runs/x").run()  # doctest: +SKIP
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    train_examples: list[MCExample]
    splits: dict[str, list[MCExample]]
    methods: list[Method]
    seeds: list[int]
    train_config: TrainConfig
    out_dir: Path
    scoring: str = "continuation"
    collect_layers: str = "last5"
    batch_size: int = 32
    progress: bool = True
    log: Callable[[str], None] = print
    extra_row_keys: dict = field(default_factory=dict)

    def collect(self) -> tuple[RoutingStore, MoEInfo]:
        info = discover_routers(self.model)
        store, summary = collect_routing(
            self.model, self.tokenizer, self.train_examples, layers=self.collect_layers, scoring=self.scoring,
            batch_size=self.batch_size, progress=self.progress, info=info,
        )  # fmt: skip
        save_routing_store(store, self.out_dir / "routing.json")
        self.log(summary.line() + f"; successful set: {len(store.successful)}")
        return store, info

    def run(self) -> tuple[list[dict], dict]:
        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        store, info = self.collect()
        ctx = RunContext(
            self.model, self.tokenizer, info, store, self.splits, self.train_config, self.scoring, self.batch_size,
            self.out_dir, self.progress,
        )  # fmt: skip
        base_routers = router_snapshot(self.model, info)
        rows, details = [], {}
        cached: dict[str, dict] = {}
        for seed in self.seeds:
            for method in self.methods:
                start = time.perf_counter()
                restore_routers(self.model, base_routers)
                # The base model does not depend on the seed: evaluate it once, report it per seed.
                if method.kind == "base" and method.name in cached:
                    outcome = cached[method.name]
                else:
                    outcome = METHOD_KINDS[method.kind](ctx, method, seed)
                    if method.kind == "base":
                        cached[method.name] = outcome
                seconds = time.perf_counter() - start
                details[f"{method.name}/seed{seed}"] = outcome
                for split, res in outcome["splits"].items():
                    rows.append({
                        "method": method.name, "split": split, "seed": seed, "accuracy": res["accuracy"],
                        "n": res["n"], "ci": res["ci"], "acc_norm": res["acc_norm"], **self.extra_row_keys,
                    })  # fmt: skip
                accs = ", ".join(f"{s} {r['accuracy']:.1%}" for s, r in outcome["splits"].items())
                self.log(f"[seed {seed}] {method.name}: {accs} ({seconds:.1f} s)")
        restore_routers(self.model, base_routers)
        meta = {
            "package_version": __version__,
            "scoring": self.scoring,
            "collect_layers": self.collect_layers,
            "train_config": self.train_config.to_dict(),
            "methods": [m.__dict__ for m in self.methods],
            "seeds": self.seeds,
            "n_train": len(self.train_examples),
            "n_successful": len(store.successful),
            "base_train_accuracy": store.accuracy,
            "splits": {k: len(v) for k, v in self.splits.items()},
        }
        self.details, self.store, self.info = details, store, info
        return rows, meta
