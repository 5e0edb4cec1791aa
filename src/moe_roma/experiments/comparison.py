"""The method comparison engine behind ``roma demo`` and ``roma experiment``.

One base model, one training set, several evaluation splits: collect the base routing once, then
for every seed and method restore the base routers, train (or not), and evaluate every split.
Every result is a row ``{"method", "split", "seed", "accuracy", "n", ...}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma import __version__
from moe_roma.data.example import MCExample, examples_sha256
from moe_roma.experiments.config import Method
from moe_roma.io.errors import RomaError
from moe_roma.io.lock import LOCK_NAME
from moe_roma.io.outputs import Kind
from moe_roma.manifold.embed import embed_texts
from moe_roma.manifold.graph import NeighbourGraph, embedding_text, neighbour_graph_for_store
from moe_roma.methods.base import TestTimeInputs, WeightsOutcome
from moe_roma.methods.registry import METHODS
from moe_roma.methods.registry import method as method_spec
from moe_roma.methods.roma.config import TrainConfig
from moe_roma.methods.roma.targets import with_oracle_targets
from moe_roma.models.checkpoint import restore_routers, router_snapshot
from moe_roma.models.discovery import MoEInfo, discover_routers
from moe_roma.models.loading import model_fingerprint
from moe_roma.routing.collect import collect_routing
from moe_roma.routing.store import RoutingStore, save_routing_store
from moe_roma.scoring import DEFAULT_SCORING
from moe_roma.scoring.engine import evaluate
from moe_roma.scoring.stats import accuracy
from moe_roma.training.trackers import Trackers, open_trackers

# The folder of `roma experiment` and `roma demo` (and of a `kind: architectures` grid): one grid's results.
RESULTS_FOLDER = Kind(
    "experiment folder",
    members=(
        "results.json",
        "table.md",
        "report.md",
        "*.png",
        "routing.json",
        "routing.safetensors",
        "outcomes.jsonl",
        "runs",
        "graphs",
        LOCK_NAME,  # a run holds it while the grid runs; one left by a killed run is taken over
    ),
    finished=("results.json",),
    partial=("outcomes.jsonl", "runs"),
)


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
    stores: dict[tuple, RoutingStore] = field(default_factory=dict)
    trackers: Trackers | None = None  # the current method run's experiment trackers (--report-to)
    # Continue a trained run from the state an interrupted grid left (``runtime.save_every``).
    resume: bool = False

    def store_for(self, split: str = "train", position: str = "last") -> RoutingStore:
        """The base model's routing store for a split (``train``: the reference set), collected once."""
        if split == "train" and position == "last":
            return self.store
        key = (split, position)
        if key not in self.stores:
            examples = self.train_examples if split == "train" else self.splits[split]
            self.stores[key], _ = collect_routing(
                self.model,
                self.tokenizer,
                examples,
                layers=self.store.layers,
                scoring=self.scoring,
                batch_size=self.batch_size,
                progress=False,
                info=self.info,
                position=position,
            )
        return self.stores[key]

    def tuned_layers(self) -> list[int]:
        """The layers the shared training settings tune: test-time baselines act on the same ones."""
        return self.info.select_layers(self.train_config.layers)

    def embeddings_for(self, split: str) -> np.ndarray:
        """Normalised sentence embeddings of a split's questions (``train``: the reference set)."""
        if split not in self.embeddings:
            store = self.store if split == "train" else self.store_for(split)
            texts = [embedding_text(q, t) for q, t in zip(store.questions, store.input_texts)]
            self.embeddings[split] = embed_texts(texts, self.train_config.graph.embedder)
        return self.embeddings[split]

    train_examples: list[MCExample] = field(default_factory=list)


def training_store(ctx: RunContext, config: TrainConfig) -> RoutingStore:
    """The training routing store these settings train on: the base one, or with oracle targets
    (computed once per prompt position, tuned layers and oracle budget, then shared by every seed)."""
    store = ctx.store_for("train", config.position)
    if config.regularizer.targets != "oracle":
        return store
    layers = ctx.info.select_layers(config.layers)
    key = ("oracle-targets", config.position, tuple(layers), config.regularizer.oracle_steps)
    if key not in ctx.stores:
        ctx.stores[key] = with_oracle_targets(
            ctx.model,
            ctx.tokenizer,
            store,
            layers,
            ctx.info,
            steps=config.regularizer.oracle_steps,
            batch_size=ctx.batch_size,
            progress=ctx.progress,
        )
    return ctx.stores[key]


def graph_for(ctx: RunContext, config: TrainConfig, store: RoutingStore) -> NeighbourGraph | None:
    """The neighbour graph for these settings, built once and shared by every run that uses it."""
    if not store.successful:
        return None
    search = config.graph.build(config.runtime.seed)
    targets = (
        [config.regularizer.targets, config.regularizer.oracle_steps]
        if config.regularizer.targets != "base"
        else []
    )
    key = hashlib.sha256(
        json.dumps([search.__dict__, config.graph.embedder, *targets], sort_keys=True).encode()
    ).hexdigest()[:16]
    key += config.position
    if key not in ctx.graphs:
        path = ctx.out_dir / "graphs" / f"{key}.safetensors"
        # Every graph over the training items embeds the same texts: embed them once per embedder
        # (minutes at 49k items on a CPU), whatever k, sigma or neighbour rule a setting uses.
        emb_key = f"graph-texts:{config.graph.embedder}"
        ctx.graphs[key], ctx.embeddings[emb_key] = neighbour_graph_for_store(
            store, search, config.graph.embedder, path, embeddings=ctx.embeddings.get(emb_key)
        )
    return ctx.graphs[key]


def evaluate_splits(ctx: RunContext) -> dict[str, dict]:
    out = {}
    for split, examples in ctx.splits.items():
        result = evaluate(
            ctx.model, ctx.tokenizer, examples, scoring=ctx.scoring, batch_size=ctx.batch_size, progress=False
        )
        s = result.summary()
        out[split] = {
            "accuracy": s["acc"],
            "n": s["n"],
            "ci": list(s["acc_ci"]) if s.get("acc_ci") else None,
            "acc_norm": s.get("acc_norm"),
            "correct": [it.correct for it in result.scored_items],
            "tasks": {t: v.get("acc") for t, v in s.get("tasks", {}).items()},
        }
    return out


def run_unchanged(ctx: RunContext, method: Method, seed: int) -> dict:
    return {"splits": evaluate_splits(ctx)}


def run_weights(ctx: RunContext, method: Method, seed: int) -> dict:
    """Train with the method's settings and this seed, then evaluate the tuned model on every split."""
    spec = METHODS[method.kind]
    config = method.config.with_seed(seed)
    run_dir = ctx.out_dir / "runs" / method.name / f"seed{seed}"
    store = training_store(ctx, config)
    graph = graph_for(ctx, config, store)
    if method.train_fraction < 1.0:
        # A seeded subset of the training set; its neighbours are searched within the subset.
        gen = torch.Generator().manual_seed(seed)
        n = max(1, round(method.train_fraction * len(store)))
        keep = sorted(torch.randperm(len(store), generator=gen)[:n].tolist())
        store, graph = store.subset(keep), None
    extra: dict[str, Any] = {"trackers": ctx.trackers} if ctx.trackers else {}
    if ctx.resume:
        extra["resume"] = True  # a saved state in run_dir (if any) is continued; none means a fresh run
    result: WeightsOutcome = spec.run(
        ctx.model, ctx.tokenizer, store, config, run_dir, graph=graph, progress=ctx.progress, **extra
    )
    return {
        "splits": evaluate_splits(ctx),
        "train": {"seconds": result.seconds, "steps": result.steps},
        "run_dir": str(run_dir),
        "layers": result.tuned_layers,
    }


def run_test_time(ctx: RunContext, method: Method, seed: int) -> dict:
    """A test-time method (oracle, C3PO) scores each split itself, on the layers the shared settings tune."""
    spec = METHODS[method.kind]
    out = {}
    for split in ctx.splits:
        inputs = TestTimeInputs(
            ctx.model,
            ctx.tokenizer,
            ctx.info,
            ctx.tuned_layers(),
            ctx.batch_size,
            False,
            ctx.store_for(split),
            ctx.store,
            lambda split=split: ctx.embeddings_for(split),
            lambda: ctx.embeddings_for("train"),
        )
        outcome = spec.run(inputs, method.config)
        out[split] = _split_outcome(outcome.correct, extra=outcome.extra)
    return {"splits": out}


def _split_outcome(correct: list[bool], extra: dict | None = None) -> dict:
    acc = accuracy(correct)
    return {
        "accuracy": acc.acc,
        "n": acc.n,
        "ci": list(acc.ci) if acc.ci else None,
        "acc_norm": None,
        "correct": list(correct),
        "extra": extra or {},
    }


# How the comparison runs each kind of registered method.
RUNNERS: dict[str, Callable[[RunContext, Method, int], dict]] = {
    "none": run_unchanged,
    "weights": run_weights,
    "test_time": run_test_time,
}


def routing_metrics(ctx: RunContext, split: str) -> dict:
    """Manifold alignment, entropy and expert utilisation of the model's current routing on a split."""
    from moe_roma.manifold.metrics import (
        expert_utilisation,
        knn_overlap,
        linear_cka,
        routing_entropy_per_layer,
    )

    store, _ = collect_routing(
        ctx.model,
        ctx.tokenizer,
        ctx.splits[split],
        layers=ctx.tuned_layers(),
        scoring=ctx.scoring,
        batch_size=ctx.batch_size,
        progress=False,
        info=ctx.info,
    )
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


OUTCOMES_NAME = "outcomes.jsonl"  # one line per finished method run, so an interrupted grid can resume


def _append_outcome(path: Path, key: str, run: str, inputs: dict, outcome: dict) -> None:
    record = {"key": key, "run": run, "inputs": inputs, "outcome": outcome}
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:  # the runs before this one stay in the file: --resume keeps them
        raise RomaError(f"{path}: could not be written ({exc.strerror or exc})") from None


def _load_outcomes(path: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """(outcome by key, the inputs each run label was last recorded with) of an ``outcomes.jsonl``."""
    from moe_roma.io.jsonl import read_records

    done: dict[str, dict] = {}
    inputs: dict[str, dict] = {}
    for record in read_records(path):
        if "key" not in record or "outcome" not in record:
            continue  # a line torn by the interruption: that run is done again
        done[record["key"]] = record["outcome"]
        if isinstance(record.get("run"), str) and isinstance(record.get("inputs"), dict):
            inputs[record["run"]] = record["inputs"]
    return done, inputs


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


# What an outcome of `outcomes.jsonl` is keyed on, besides the model and the data. Their shapes are
# frozen (TrainConfig.settings() is the short spelling of earlier releases): a long grid resumes
# across releases only while they hash the same.
def shared_settings(
    train: TrainConfig, scoring: str, batch_size: int, collect_layers: str, metrics_split: str | None
) -> dict[str, Any]:
    """The settings every method run of a grid shares."""
    return {
        "train": train.settings(),
        "scoring": scoring,
        "batch_size": batch_size,
        "collect_layers": collect_layers,
        "metrics_split": metrics_split,
    }


def method_settings(method: Method, seed: int | None) -> dict[str, Any]:
    """One method run's own settings: its kind, seed (None when seed-free), share and config."""
    settings = method.config.to_dict() if method.config is not None else None
    return {"kind": method.kind, "seed": seed, "fraction": method.train_fraction, "settings": settings}


@dataclass
class PlannedRun:
    """One method run of a grid: what it runs, the key its outcome is recorded under, and why."""

    method: Method
    seed: int
    kind: str
    key: str
    inputs: dict[str, str]
    label: str


@dataclass
class Comparison:
    """Run ``methods`` x ``seeds`` and collect rows.

    >>> rows = Comparison(  # doctest: +SKIP
    ...     model, tok, train, splits, methods, [0, 1, 2], TrainConfig(), "runs/x"
    ... ).run()
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    train_examples: list[MCExample]
    splits: dict[str, list[MCExample]]
    methods: list[Method]
    seeds: list[int]
    train_config: TrainConfig
    out_dir: Path
    scoring: str = DEFAULT_SCORING
    collect_layers: str = "last5"
    batch_size: int = 32
    progress: bool = True
    log: Callable[[str], None] = print
    extra_row_keys: dict = field(default_factory=dict)
    metrics_split: str | None = None  # routing metrics of base and trained methods on this split
    resume: bool = False  # reuse the method runs an interrupted run of the same grid finished
    report_to: list[str] = field(default_factory=list)  # experiment trackers, one run per method and seed
    # Method runs at once, each in its own process (1: one after another, in this process); a worker
    # builds its model and data with ``load_inputs``, a picklable () -> (model, tokenizer, train, splits).
    workers: int = 1
    load_inputs: Callable[[], tuple] | None = None

    def _run_inputs(self, method: Method, seed: int | None) -> dict[str, str]:
        """Everything a method run's outcome depends on, one digest per field (named when one changes):
        the model (config and every weight), the data's content, the method's and the shared settings."""
        if not hasattr(self, "_shared_inputs"):
            self._shared_inputs = {
                "model": model_fingerprint(self.model),
                "training data": examples_sha256(self.train_examples),
                **{f"split {k}": examples_sha256(v) for k, v in self.splits.items()},
                "shared settings": _digest(
                    shared_settings(
                        self.train_config,
                        self.scoring,
                        self.batch_size,
                        self.collect_layers,
                        self.metrics_split,
                    )
                ),
            }
        return {**self._shared_inputs, "method settings": _digest(method_settings(method, seed))}

    def _outcome_key(self, method: Method, seed: int | None) -> str:
        """The key of a method run's outcome: its name and every input it depends on (``_run_inputs``)."""
        return _digest({"name": method.name, **self._run_inputs(method, seed)})

    def collect(self) -> tuple[RoutingStore, MoEInfo]:
        info = discover_routers(self.model)
        store, summary = collect_routing(
            self.model,
            self.tokenizer,
            self.train_examples,
            layers=self.collect_layers,
            scoring=self.scoring,
            batch_size=self.batch_size,
            progress=self.progress,
            info=info,
        )
        save_routing_store(store, self.out_dir / "routing.json")
        self.log(summary.line() + f"; successful set: {len(store.successful)}")
        return store, info

    def run(self) -> tuple[list[dict], dict]:
        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        store, info = self.collect()
        ctx = self.ctx = self._context(store, info)
        base_routers = router_snapshot(self.model, info)
        rows, details = [], {}
        outcomes_path, done, recorded = self._outcomes()
        planned = self._planned_runs(done, recorded, outcomes_path)
        logged: set[str] = set()
        if self.workers > 1:
            logged = self._run_in_workers(planned, outcomes_path, done)
        for run in planned:
            start = time.perf_counter()
            restore_routers(self.model, base_routers)
            # A seed-free method's key has no seed: it runs once and is reported for every seed.
            if run.key not in done:
                outcome = self._run_method(ctx, run.method, run.kind, run.seed)
                _append_outcome(outcomes_path, run.key, run.label, run.inputs, outcome)
                done[run.key] = outcome
            outcome = done[run.key]
            details[f"{run.method.name}/seed{run.seed}"] = outcome
            rows.extend(self._rows(run.method, run.seed, outcome))
            if run.key not in logged:
                self._log_run(run, outcome, time.perf_counter() - start)
        restore_routers(self.model, base_routers)
        meta = self._meta(store)
        self.details, self.store, self.info = details, store, info
        return rows, meta

    def _planned_runs(self, done: dict, recorded: dict, outcomes_path: Path) -> list[PlannedRun]:
        """Every (seed, method) of the grid in order, with its outcome key; a run that was done before
        with other inputs says which changed."""
        planned = []
        for seed in self.seeds:
            for method in self.methods:
                spec = method_spec(method.kind)
                run_seed = None if spec.seed_free else seed
                key, inputs = self._outcome_key(method, run_seed), self._run_inputs(method, run_seed)
                label = f"{method.name}/seed{run_seed}" if run_seed is not None else method.name
                old = recorded.get(label)
                if old is not None and key not in done and not any(r.label == label for r in planned):
                    changed = [k for k in sorted(set(old) | set(inputs)) if old.get(k) != inputs.get(k)]
                    self.log(
                        f"resuming: {label} runs again: its {', '.join(changed)} changed since "
                        f"{outcomes_path}"
                    )
                planned.append(PlannedRun(method, seed, spec.kind, key, inputs, label))
        return planned

    def _log_run(self, run: PlannedRun, outcome: dict, seconds: float) -> None:
        accs = ", ".join(f"{s} {r['accuracy']:.1%}" for s, r in outcome["splits"].items())
        self.log(f"[seed {run.seed}] {run.method.name}: {accs} ({seconds:.1f} s)")

    def _run_in_workers(self, planned: list[PlannedRun], outcomes_path: Path, done: dict) -> set[str]:
        """Run the grid's missing method runs in ``workers`` processes at once, each with this process's
        torch threads, recording each outcome as it arrives; returns the keys it ran (and logged).

        Each worker loads the model and data itself (``load_inputs``) and the base routing this process
        collected (``routing.json``), so a run there is the run this process would do: the same inputs,
        the same seed, base routers restored first."""
        if self.load_inputs is None:
            raise RomaError("running method runs in worker processes needs a picklable load_inputs")
        todo = list({r.key: r for r in planned if r.key not in done}.values())
        if len(todo) < 2:
            return set()
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool
        from multiprocessing import get_context

        from tqdm import tqdm

        workers = min(self.workers, len(todo))
        self.log(f"running {len(todo)} method runs in {workers} worker processes")
        settings = self._worker_settings()
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=get_context("spawn"),
            initializer=_start_worker,
            initargs=(self.load_inputs, settings, torch.get_num_threads()),
        ) as pool:
            running = {pool.submit(_worker_run, r.method, r.kind, r.seed): r for r in todo}
            bar = tqdm(total=len(todo), desc="method runs", unit="run", disable=not self.progress)
            try:
                while running:
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        run = running.pop(future)
                        try:
                            outcome, seconds = future.result()
                        except BrokenProcessPool:
                            raise RomaError(
                                f"a worker process died (killed, or out of memory) during {run.label}; "
                                f"the finished runs are in {outcomes_path}: run the same command with "
                                "--resume (fewer --workers if memory ran out)"
                            ) from None
                        _append_outcome(outcomes_path, run.key, run.label, run.inputs, outcome)
                        done[run.key] = outcome
                        self._log_run(run, outcome, seconds)
                        bar.update()
            except BaseException:
                # A stop or a failure ends the other runs now rather than when they finish: their
                # workers stop as a stopped `roma train` does, and resume from their saved states.
                _stop_workers(pool)
                raise
            finally:
                bar.close()
        return {r.key for r in todo}

    def _worker_settings(self) -> dict[str, Any]:
        """The fields a worker's own Comparison is built with (its model and data it loads itself)."""
        return {
            "methods": self.methods,
            "seeds": self.seeds,
            "train_config": self.train_config,
            "out_dir": self.out_dir,
            "scoring": self.scoring,
            "collect_layers": self.collect_layers,
            "batch_size": self.batch_size,
            # Several workers' bars would overwrite each other on one line: the grid's process shows
            # one bar over the method runs instead.
            "progress": False,
            "metrics_split": self.metrics_split,
            "resume": self.resume,
            "report_to": self.report_to,
        }

    def _context(self, store: RoutingStore, info: MoEInfo) -> RunContext:
        """What every method runner shares: the model, the routing and the grid's settings."""
        return RunContext(
            self.model,
            self.tokenizer,
            info,
            store,
            self.splits,
            self.train_config,
            self.scoring,
            self.batch_size,
            self.out_dir,
            self.progress,
            train_examples=self.train_examples,
            resume=self.resume,
        )

    def _outcomes(self) -> tuple[Path, dict, dict]:
        """``outcomes.jsonl`` and, with ``resume``, the runs it records; without, it starts empty."""
        outcomes_path = self.out_dir / OUTCOMES_NAME
        done, recorded = _load_outcomes(outcomes_path) if self.resume else ({}, {})
        if not self.resume:
            outcomes_path.unlink(missing_ok=True)
        elif done:
            self.log(f"resuming: {len(done)} method runs already done in {outcomes_path}")
        return outcomes_path, done, recorded

    def _run_method(self, ctx: RunContext, method: Method, kind: str, seed: int) -> dict:
        """One method run, with its own tracker run: its outcome (and routing metrics if asked)."""
        run_name = f"{method.name}/seed{seed}"
        settings = method.config.to_dict() if method.config is not None else {}
        with open_trackers(
            self.report_to,
            self.out_dir / "runs" / method.name / f"seed{seed}",
            run_name,
            {"method": method.name, "kind": method.kind, "seed": seed, "settings": settings},
        ) as trackers:
            ctx.trackers = trackers
            outcome = RUNNERS[kind](ctx, method, seed)
            if self.metrics_split and kind in ("none", "weights"):
                outcome["metrics"] = routing_metrics(ctx, self.metrics_split)
            trackers.log_summary(
                {
                    split: {"accuracy": r["accuracy"], "acc_norm": r["acc_norm"]}
                    for split, r in outcome["splits"].items()
                },
                prefix="eval/",
            )
            ctx.trackers = None
        return outcome

    def _rows(self, method: Method, seed: int, outcome: dict) -> list[dict]:
        """One tidy row per split of a method run's outcome."""
        return [
            {
                "method": method.name,
                "split": split,
                "seed": seed,
                "accuracy": res["accuracy"],
                "n": res["n"],
                "ci": res["ci"],
                "acc_norm": res["acc_norm"],
                "kind": method.kind,
                "setting": method.overrides,
                **res.get("extra", {}),
                **self.extra_row_keys,
            }
            for split, res in outcome["splits"].items()
        ]

    def _meta(self, store: RoutingStore) -> dict:
        """What the grid ran with, for results.json next to the rows."""
        return {
            "package_version": __version__,
            "scoring": self.scoring,
            "collect_layers": self.collect_layers,
            "train_config": self.train_config.settings(),
            "methods": [
                {
                    "name": m.name,
                    "kind": m.kind,
                    "overrides": m.overrides,
                    "settings": m.config.to_dict() if m.config is not None else None,
                }
                for m in self.methods
            ],
            "seeds": self.seeds,
            "n_train": len(self.train_examples),
            "n_successful": len(store.successful),
            "base_train_accuracy": store.accuracy,
            "splits": {k: len(v) for k, v in self.splits.items()},
        }


# A worker process's own comparison, context and base routers (``Comparison.workers``), built once
# by ``_start_worker`` and used by every method run the process is given.
_WORKER: dict[str, Any] = {}


def _start_worker(load_inputs: Callable[[], tuple], settings: dict, threads: int) -> None:
    import signal
    import threading

    from tqdm import tqdm

    from moe_roma.routing.store import load_routing_store

    # Between runs a worker ignores SIGINT (a terminal's Ctrl-C reaches every process, and the grid's
    # process stops the workers) and dies quietly of SIGTERM; during a run both stop it as they stop
    # `roma train` (``_worker_run``).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # tqdm's default lock is a multiprocessing semaphore, which a stopped worker would leave behind
    # (and Python warn about at exit); one process's bars need only a thread lock.
    tqdm.set_lock(threading.RLock())
    # A worker outlives a grid process killed outright (SIGKILL): stop it then, so that a resumed grid's
    # worker never trains into the same run folder beside it.
    threading.Thread(target=_stop_with_parent, args=(os.getppid(),), daemon=True).start()
    torch.set_num_threads(threads)
    model, tokenizer, train_examples, splits = load_inputs()
    comparison = Comparison(model, tokenizer, train_examples, splits, **settings)
    info = discover_routers(model)
    store = load_routing_store(Path(settings["out_dir"]) / "routing.json")
    _WORKER.update(
        comparison=comparison,
        ctx=comparison._context(store, info),
        base_routers=router_snapshot(model, info),
    )


def _stop_with_parent(parent: int) -> None:
    """SIGTERM this process once its parent is gone (it is then adopted by another)."""
    import signal

    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _worker_run(method: Method, kind: str, seed: int) -> tuple[dict, float]:
    """One method run in a worker process: its outcome and seconds."""
    from moe_roma.io.interrupts import Interrupted, handle_interrupts

    start = time.perf_counter()
    comparison, ctx = _WORKER["comparison"], _WORKER["ctx"]
    try:
        with handle_interrupts():
            restore_routers(comparison.model, _WORKER["base_routers"])
            outcome = comparison._run_method(ctx, method, kind, seed)
    except Interrupted as stop:  # the run kept its last complete state; the grid's process is stopping
        os._exit(stop.exit_status)
    return outcome, time.perf_counter() - start


def _stop_workers(pool: Any) -> None:
    """Send each worker of a ``ProcessPoolExecutor`` SIGTERM and drop the runs not started."""
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)  # joins them: their queues are released, none leaks
