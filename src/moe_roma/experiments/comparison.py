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

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma import __version__
from moe_roma.data.example import MCExample
from moe_roma.io.errors import RomaError
from moe_roma.scoring.engine import evaluate
from moe_roma.manifold.embed import embed_texts
from moe_roma.manifold.graph import GraphConfig, NeighbourGraph, embedding_text, neighbour_graph_for_store
from moe_roma.models.discovery import MoEInfo, discover_routers
from moe_roma.routing.collect import collect_routing
from moe_roma.routing.store import RoutingStore, save_routing_store
from moe_roma.methods.roma.config import TrainConfig
from moe_roma.methods.roma.trainer import RouterTrainer, TrainResult


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
    stores: dict[tuple[str, str], RoutingStore] = field(default_factory=dict)

    def store_for(self, split: str = "train", position: str = "last") -> RoutingStore:
        """The base model's routing store for a split (``train``: the reference set), collected once."""
        if split == "train" and position == "last":
            return self.store
        key = (split, position)
        if key not in self.stores:
            examples = self.train_examples if split == "train" else self.splits[split]
            self.stores[key], _ = collect_routing(
                self.model, self.tokenizer, examples, layers=self.store.layers, scoring=self.scoring,
                batch_size=self.batch_size, progress=False, info=self.info, position=position,
            )  # fmt: skip
        return self.stores[key]

    def tuned_layers(self) -> list[int]:
        """The layers the shared training settings tune: test-time baselines act on the same ones."""
        return self.info.select_layers(self.train_config.layers)

    def embeddings_for(self, split: str) -> np.ndarray:
        """Normalised sentence embeddings of a split's questions (``train``: the reference set)."""
        if split not in self.embeddings:
            store = self.store if split == "train" else self.store_for(split)
            texts = [embedding_text(q, t) for q, t in zip(store.questions, store.input_texts)]
            self.embeddings[split] = embed_texts(texts, self.train_config.embedder)
        return self.embeddings[split]

    train_examples: list[MCExample] = field(default_factory=list)


def graph_for(ctx: RunContext, config: TrainConfig) -> NeighbourGraph | None:
    """The neighbour graph for these settings, built once and shared by every run that uses it."""
    if not ctx.store.successful:
        return None
    gcfg = GraphConfig(
        k=config.k, epsilon=config.epsilon, sigma=config.sigma, dedupe_threshold=config.dedupe_threshold,
        random=config.random_neighbours, seed=config.seed if config.random_neighbours else 0,
    )  # fmt: skip
    key = hashlib.sha256(json.dumps([gcfg.__dict__, config.embedder], sort_keys=True).encode()).hexdigest()[:16]
    store = ctx.store_for("train", config.position)
    key += config.position
    if key not in ctx.graphs:
        path = ctx.out_dir / "graphs" / f"{key}.safetensors"
        ctx.graphs[key], _ = neighbour_graph_for_store(store, gcfg, config.embedder, path)
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
    overrides = dict(method.overrides)
    fraction = float(overrides.pop("train_fraction", 1.0))
    config = TrainConfig(**{**ctx.train_config.to_dict(), **overrides, "seed": seed}).validate()
    run_dir = ctx.out_dir / "runs" / method.name / f"seed{seed}"
    store = ctx.store_for("train", config.position)
    graph = graph_for(ctx, config)
    if fraction < 1.0:
        # A seeded subset of the training set; its neighbours are searched within the subset.
        gen = torch.Generator().manual_seed(seed)
        keep = sorted(torch.randperm(len(store), generator=gen)[: max(1, round(fraction * len(store)))].tolist())
        store, graph = store.subset(keep), None
    trainer = RouterTrainer(ctx.model, ctx.tokenizer, store, config, run_dir, graph=graph, progress=ctx.progress)
    result: TrainResult = trainer.train()
    return {"splits": evaluate_splits(ctx), "train": {"seconds": result.seconds, "steps": result.steps},
            "run_dir": str(run_dir), "layers": result.tuned_layers}  # fmt: skip


def run_oracle(ctx: RunContext, method: Method, seed: int) -> dict:
    """Oracle routing on each split: the upper bound of what last-token routing can do."""
    from moe_roma.methods.oracle import oracle_routing

    out = {}
    for split in ctx.splits:
        options = {"layers": ctx.tuned_layers(), **method.overrides}
        res = oracle_routing(ctx.model, ctx.tokenizer, ctx.store_for(split), batch_size=ctx.batch_size,
                             progress=False, info=ctx.info, **options)  # fmt: skip
        out[split] = _split_outcome(res.correct_after, extra={"base_accuracy": res.base_accuracy, "gap": res.gap,
                                                              "cost_vs_base": res.passes.cost_vs_base})  # fmt: skip
    return {"splits": out}


def run_c3po(ctx: RunContext, method: Method, seed: int) -> dict:
    """C3PO test-time re-mixing from the successful training samples."""
    from moe_roma.methods.c3po import c3po

    out = {}
    for split in ctx.splits:
        options = {"layers": ctx.tuned_layers(), **method.overrides}
        res = c3po(ctx.model, ctx.tokenizer, ctx.store, ctx.embeddings_for("train"), ctx.store_for(split),
                   ctx.embeddings_for(split), batch_size=ctx.batch_size, progress=False, info=ctx.info,
                   **options)  # fmt: skip
        out[split] = _split_outcome(res.correct, extra={"cost_vs_base": res.passes.cost_vs_base,
                                                        "extra_forwards": res.passes.extra_forwards})  # fmt: skip
    return {"splits": out}


def _split_outcome(correct: list[bool], extra: dict | None = None) -> dict:
    from moe_roma.scoring.stats import accuracy

    acc = accuracy(correct)
    return {"accuracy": acc.acc, "n": acc.n, "ci": list(acc.ci) if acc.ci else None, "acc_norm": None,
            "correct": list(correct), "extra": extra or {}}  # fmt: skip


# Kinds of method. base, oracle and c3po do not depend on the training seed: they run once.
METHOD_KINDS: dict[str, Callable[[RunContext, Method, int], dict]] = {
    "base": run_base, "train": run_train, "oracle": run_oracle, "c3po": run_c3po,
}  # fmt: skip
SEED_FREE_KINDS = {"base", "oracle", "c3po"}


def routing_metrics(ctx: RunContext, split: str) -> dict:
    """Manifold alignment, entropy and expert utilisation of the model's current routing on a split."""
    from moe_roma.manifold.metrics import (
        expert_utilisation,
        knn_overlap,
        linear_cka,
        routing_entropy_per_layer,
    )

    store, _ = collect_routing(ctx.model, ctx.tokenizer, ctx.splits[split], layers=ctx.tuned_layers(),
                               scoring=ctx.scoring, batch_size=ctx.batch_size, progress=False, info=ctx.info)  # fmt: skip
    emb = ctx.embeddings_for(split)
    top_k = ctx.info.routers[store.layers[0]].top_k
    util = expert_utilisation(store.routing, top_k)
    return {
        "knn_overlap@5": knn_overlap(emb, store.routing, 5),
        "cka": linear_cka(emb, store.routing.reshape(len(store), -1)),
        "entropy": routing_entropy_per_layer(store.routing),
        "utilisation_min": util.min(dim=1).values.tolist(),
        "utilisation_max": util.max(dim=1).values.tolist(),
    }


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
    metrics_split: str | None = None  # routing metrics of base and trained methods on this split

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
            self.out_dir, self.progress, train_examples=self.train_examples,
        )  # fmt: skip
        self.ctx = ctx
        base_routers = router_snapshot(self.model, info)
        rows, details = [], {}
        cached: dict[str, dict] = {}
        for seed in self.seeds:
            for method in self.methods:
                start = time.perf_counter()
                restore_routers(self.model, base_routers)
                # Seed-free methods are evaluated once and reported for every seed.
                if method.kind in SEED_FREE_KINDS and method.name in cached:
                    outcome = cached[method.name]
                else:
                    if method.kind not in METHOD_KINDS:
                        raise RomaError(f"method {method.name!r}: unknown kind {method.kind!r} ({', '.join(METHOD_KINDS)})")
                    outcome = METHOD_KINDS[method.kind](ctx, method, seed)
                    if self.metrics_split and method.kind in ("base", "train"):
                        outcome["metrics"] = routing_metrics(ctx, self.metrics_split)
                    if method.kind in SEED_FREE_KINDS:
                        cached[method.name] = outcome
                seconds = time.perf_counter() - start
                details[f"{method.name}/seed{seed}"] = outcome
                for split, res in outcome["splits"].items():
                    rows.append({
                        "method": method.name, "split": split, "seed": seed, "accuracy": res["accuracy"],
                        "n": res["n"], "ci": res["ci"], "acc_norm": res["acc_norm"], "kind": method.kind,
                        "setting": method.overrides, **res.get("extra", {}), **self.extra_row_keys,
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
