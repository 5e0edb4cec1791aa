"""The RoMA training loop: only the chosen routers learn; everything else is frozen.

``L = L_task + lambda(t) * R``, where for the default ``manifold`` regulariser
``R = sum_j W_ij ||r_i(theta) - r_j||^2`` and ``r_i(theta)`` is read from the router logits of the
same forward pass, so the regulariser's gradient reaches the routers (the public code read it from
the stored file instead, which made it a constant).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma import __version__
from moe_roma.io.atomic import finite_json
from moe_roma.io.errors import DataError, RomaError, RomaWarning
from moe_roma.io.interrupts import critical
from moe_roma.manifold.graph import NeighbourGraph, neighbour_graph_for_store
from moe_roma.manifold.health import health_from_sums, health_sums
from moe_roma.methods.base import MethodSpec, register
from moe_roma.methods.common import losses
from moe_roma.methods.common.batches import TrainItem, build_items, letter_ids_tensor
from moe_roma.methods.common.forward import items_forward
from moe_roma.methods.common.prefix import PrefixCache
from moe_roma.methods.roma.config import TrainConfig
from moe_roma.methods.roma.regularizers import RegularizerInputs
from moe_roma.methods.roma.targets import with_oracle_targets
from moe_roma.models.card import build_model_card, write_model_card
from moe_roma.models.checkpoint import CONFIG_NAME, save_router_checkpoint
from moe_roma.models.discovery import MoEInfo, discover_routers
from moe_roma.models.inputs import pad_id
from moe_roma.models.loading import model_identity
from moe_roma.routing.store import RoutingStore
from moe_roma.scoring.common import context_length
from moe_roma.training.monitor import collapse_events, warn_on_collapse
from moe_roma.training.run_folder import METRICS_NAME, NEIGHBOURS_NAME
from moe_roma.training.state import (
    STATE_NAME,
    check_state_fits,
    load_train_state,
    restore_train_state,
    save_train_state,
    tensors_sha256,
)
from moe_roma.training.trackers import Trackers

LOG = logging.getLogger("moe_roma.train")


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    seconds: float
    tuned_layers: list[int]
    final_metrics: dict
    skipped_steps: int


@dataclass
class _Loop:
    """What the training loop carries from one step to the next."""

    params: list[torch.nn.Parameter]  # the trained router weights, fp32 while training
    optimizer: Any
    scaler: Any  # torch.amp.GradScaler (enabled for fp16 on CUDA only)
    original_dtypes: dict[str, torch.dtype]
    total: int  # steps of the whole run
    steps_per_epoch: int
    state_path: Path
    metrics_path: Path
    start_time: float
    step: int = 0
    skipped: int = 0
    warned: set = field(default_factory=set)  # (kind, layer) of the collapses logged so far
    last: dict = field(default_factory=dict)  # the last logged record


@dataclass
class _Step:
    """One optimiser step's outcome, for its record."""

    out: dict | None  # per-sample task loss and routing of this process's samples (None: it had none)
    terms: dict
    local: list[TrainItem]
    lam: float
    lr: float
    loss_value: float
    grad_norm: float  # NaN for a skipped step


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _sharded(model: torch.nn.Module) -> bool:
    """True for a model sharded with FSDP2 (``moe_roma.distributed.fsdp``): its ranks must run every
    forward and backward together, since each one all-gathers the layers' weights."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def check_against_routing(
    config: TrainConfig, store: RoutingStore, store_path: str | Path | None = None
) -> None:
    """The settings that must be the routing file's own: the prompt token it recorded, and the scoring
    that judged its answers (the task loss must score them the same way). One sentence if not."""
    recorded = store.meta.get("position", "last")
    if recorded != config.position:
        raise DataError(
            store_path,
            None,
            f"the routing file records the {recorded} prompt token but position={config.position}; collect "
            f"it with --position {config.position}",
        )
    scored = store.meta.get("answer_scoring")
    if scored is not None and scored != config.scoring:
        raise DataError(
            store_path,
            None,
            f"the routing file was collected with {scored} scoring but scoring={config.scoring}; train with "
            f"scoring={scored}, the default (the task loss must score the answers the way collection judged "
            "them)",
        )


class RouterTrainer:
    """Holds the model, data and state of one router post-training run.

    >>> trainer = RouterTrainer(  # doctest: +SKIP
    ...     model, tok, store, train_config(regularizer={"name": "manifold"}), "runs/x"
    ... )
    >>> result = trainer.train()  # doctest: +SKIP
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        store: RoutingStore,
        config: TrainConfig,
        out_dir: str | Path,
        graph: NeighbourGraph | None = None,
        progress: bool = True,
        store_path: str | Path | None = None,
        run_meta: dict | None = None,
        trackers: Trackers | None = None,
    ) -> None:
        self.model, self.tokenizer, self.store, self.config = model, tokenizer, store, config.validate()
        # Recorded in router_config.json (e.g. how the model was sharded).
        self.run_meta = dict(run_meta or {})
        self.lockstep = _sharded(model)
        self.trackers = trackers  # rank 0's TensorBoard / W&B / MLflow, beside metrics.jsonl
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.rank, self.world = _world()
        self.info: MoEInfo = discover_routers(model)
        store.fit_to_model(self.info, store_path)
        self.routing_sha256 = _store_fingerprint(store)  # before any change to the targets (oracle)
        self.layers = self.info.select_layers(config.layers)
        self.store_cols = self._store_columns(store_path)
        check_against_routing(config, store, store_path)
        self.device = next(model.parameters()).device
        self.max_length = config.max_length or context_length(model, tokenizer)
        self._prepare_targets(graph, progress)
        self._unfreeze_routers()
        self.items: list[TrainItem] = build_items(
            self.store, tokenizer, config.scoring, self.max_length, store_path
        )
        self.pad = pad_id(tokenizer)
        self.letter_ids = (
            letter_ids_tensor(tokenizer, max(it.n_choices for it in self.items)).to(self.device)
            if config.scoring == "letter"
            else None
        )
        self.first_layer = min(self.layers)
        self.cache: PrefixCache | None = None
        self.base_topk = self._base_topk()

    def _store_columns(self, store_path: str | Path | None) -> list[int]:
        """Where each tuned layer sits in the routing file's layers; every one must be there."""
        missing = [layer for layer in self.layers if layer not in self.store.layers]
        if missing:
            raise DataError(
                store_path,
                None,
                f"layers {missing} are not in the routing file (it has {self.store.layers}); collect them or "
                "choose others",
            )
        return [self.store.layers.index(layer) for layer in self.layers]

    def _prepare_targets(self, graph: NeighbourGraph | None, progress: bool) -> None:
        """The routing the regulariser pulls towards: the oracle's for failed items (``targets:
        oracle``) or the recorded one, the regulariser itself, and the neighbour graph (built here,
        and cached in the run folder, unless given)."""
        config, store = self.config, self.store
        if config.regularizer.targets == "oracle":
            store = self.store = with_oracle_targets(
                self.model,
                self.tokenizer,
                store,
                self.layers,
                self.info,
                steps=config.regularizer.oracle_steps,
                batch_size=config.schedule.batch_size,
                max_length=self.max_length,
                progress=progress,
            )
        self.regularizer = config.regularizer.name
        if not store.successful:
            if not config.allow_empty_successful:
                raise RomaError(
                    "the successful set is empty (the base model answered no training sample right); "
                    "pass allow_empty_successful=true to train without the manifold term"
                )
            if self.regularizer == "manifold":
                warnings.warn(
                    "empty successful set: training without the manifold term", RomaWarning, stacklevel=3
                )
                self.regularizer = "none"
        # Built once; None for plain router tuning (or when an empty successful set turned RoMA into it).
        self.regularizer_term = config.regularizer.build() if self.regularizer != "none" else None
        self.graph = graph
        if self.graph is None and store.successful:
            cache = self.out_dir / NEIGHBOURS_NAME if self.rank == 0 else None
            self.graph, _ = neighbour_graph_for_store(
                store, config.graph.build(config.runtime.seed), config.graph.embedder, cache, progress=False
            )

    def _unfreeze_routers(self) -> None:
        """Freeze everything, then let the chosen routers learn; keep their base values, and what a
        saved state must match (``base_model``)."""
        self.model.requires_grad_(False)
        self.params: dict[str, torch.nn.Parameter] = {}
        named = dict(self.model.named_parameters())
        for layer in self.layers:
            for name in self.info.routers[layer].parameter_names:
                p = named[name]
                p.requires_grad_(True)
                self.params[name] = p
        self.base_params = {n: p.detach().clone() for n, p in self.params.items()}
        self.base_model = {
            **{k: v for k, v in model_identity(self.model).items() if k != "name_or_path"},
            "num_experts": self.info.num_experts,
            "routers_sha256": tensors_sha256({n: p.float() for n, p in self.base_params.items()}),
        }

    # ----------------------------------------------------------------------------------------------
    def _base_topk(self) -> torch.Tensor:
        """Each sample's base top-k experts per tuned layer, to count how many routings changed."""
        k = max(r.top_k for r in self.info.routers.values())
        return self.store.routing[:, self.store_cols].topk(k, dim=-1).indices.sort(-1).values

    def _router_hooks(self) -> contextlib.ExitStack:
        """Temperature and dropout act on the router's input during training only."""
        stack = contextlib.ExitStack()
        t, p = self.config.temperature, self.config.router_dropout
        if t == 1.0 and p == 0.0:
            return stack

        def pre(module, args):
            x = args[0] / t
            if p > 0:
                x = torch.nn.functional.dropout(x, p=p, training=True)
            return (x, *args[1:])

        for layer in self.layers:
            handle = self.info.routers[layer].module.register_forward_pre_hook(pre)
            stack.callback(handle.remove)
        return stack

    def forward_items(self, items: list[TrainItem], use_cache: bool = True) -> dict[str, torch.Tensor]:
        """Per-sample task loss and live routing r_i(theta) (B, L, E) for a list of items."""
        return items_forward(
            self.model,
            self.info,
            self.layers,
            items,
            self.pad,
            self.config.scoring,
            self.letter_ids,
            cache=self.cache if use_cache else None,
            router_hooks=self._router_hooks(),
            position=self.config.position,
        )

    def regularizer_terms(self, items: list[TrainItem], routing: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample manifold distance (also logged when another regulariser trains) and the active one."""
        out: dict[str, torch.Tensor] = {}
        if self.graph is not None:
            idx = self.graph.indices[[it.index for it in items]]
            w = self.graph.weights[[it.index for it in items]].to(self.device)
            targets = self.store.routing[idx.clamp_min(0)][:, :, self.store_cols].flatten(2).to(self.device)
            out["manifold"] = losses.manifold_loss(routing.flatten(1), targets, w)
        if self.regularizer_term is not None:
            out["reg"] = self.regularizer_term(
                RegularizerInputs(
                    routing,
                    out.get("manifold"),
                    list(self.params.values()),
                    list(self.base_params.values()),
                    self.world,
                )
            )
        return out

    # ----------------------------------------------------------------------------------------------
    def _batches(self, epoch: int, global_batch: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.config.runtime.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.items), generator=gen).tolist()
        return [order[i : i + global_batch] for i in range(0, len(order), global_batch)]

    def _step_figures(self, out: dict | None, terms: dict, items: list[TrainItem]) -> dict | None:
        """The step's losses and routing health over every process's samples, or None where there are none.

        Every process calls it at a logged step (the sums are all-reduced): under torchrun the figures
        are the whole batch's, not rank 0's share of it.
        """
        k = max(r.top_k for r in self.info.routers.values())
        width = len(self.layers) * (1 + self.info.num_experts) + 2
        sums = torch.zeros(5 + width, dtype=torch.float64, device=self.device)
        if out is not None:
            task = out["task"].detach().double()
            for i, name in enumerate(("manifold", "reg")):
                if name in terms:  # a scalar regulariser counts once per sample, as in the loss
                    sums[1 + i] = torch.broadcast_to(terms[name].detach().double(), task.shape).sum()
                    sums[3 + i] = len(items)
            sums[0] = task.sum()
            base = self.base_topk[[it.index for it in items]]
            sums[5:] = health_sums(out["routing"], k, base)
        if self.world > 1:
            dist.all_reduce(sums)
        n = float(sums[-1])
        if n == 0:
            return None
        figures = {
            "task_loss": float(sums[0]) / n,
            "manifold_loss": float(sums[1] / sums[3]) if sums[3] > 0 else None,
            "reg_loss": float(sums[2] / sums[4]) if sums[4] > 0 else None,
        }
        return {**figures, **health_from_sums(sums[5:], self.layers, self.info.num_experts)}

    def train(self, resume: bool = False) -> TrainResult:
        """Run every step (from a saved state with ``resume``), then write the router checkpoint."""
        loop = self._setup(resume)
        bar = tqdm(
            total=loop.total,
            initial=loop.step,
            desc="train",
            unit="step",
            disable=not (self.progress and self.rank == 0),
        )
        for epoch in range(loop.step // loop.steps_per_epoch, self.config.schedule.epochs):
            batches = self._batches(epoch, self.config.schedule.batch_size)
            for b in range(loop.step - epoch * loop.steps_per_epoch, len(batches)):
                done = self._step(loop, batches[b])
                record = self._log(loop, done, epoch + (b + 1) / len(batches))
                if record is not None:
                    bar.set_postfix(task=f"{record['task_loss']:.3f}", manifold=_fmt(record["manifold_loss"]))
                bar.update(1)
                self._save_state_if_due(loop)
        bar.close()
        return self._finish(loop)

    def _setup(self, resume: bool) -> _Loop:
        """Before the first step: the prefix cache, fp32 router weights and their optimiser, and the
        position to start from (a saved state's with ``resume``, else step 0 and a fresh metrics file)."""
        cfg, run, sched = self.config, self.config.runtime, self.config.schedule
        torch.manual_seed(run.seed)
        start_time = time.perf_counter()
        if run.prefix_cache and self.first_layer > 0:
            self.cache = PrefixCache(self.first_layer, run.prefix_cache_device_fraction)
            self.cache.fill(
                self.model,
                self.info,
                self.items,
                self.pad,
                sched.batch_size,
                self.progress and self.rank == 0,
            )
        _sync(self.device)
        self.timings = {"prefix_cache_seconds": time.perf_counter() - start_time}
        steps_per_epoch = math.ceil(len(self.items) / sched.batch_size)
        total = steps_per_epoch * sched.epochs
        self.total_steps, self.last_step = total, 0
        params = list(self.params.values())
        original_dtypes = {name: p.dtype for name, p in self.params.items()}
        for p in params:
            if p.dtype != torch.float32:
                p.data = p.data.float()  # fp32 master weights and AdamW state
        optimizer = cfg.optimizer.build(params)
        # fp16 activations can underflow small router gradients; scale the loss (bf16 needs no scaler).
        # The scaled gradients land on fp32 router weights, so unscaling them is always legal.
        fp16 = any(p.dtype == torch.float16 for p in self.model.parameters())
        scaler = torch.amp.GradScaler(self.device.type, enabled=fp16 and self.device.type == "cuda")
        if run.gradient_checkpointing:
            _activation_checkpointing(self.model, True)
            self.model.train()  # transformers only checkpoints in training mode; no dropout in these layers
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        loop = _Loop(
            params,
            optimizer,
            scaler,
            original_dtypes,
            total,
            steps_per_epoch,
            self.out_dir / STATE_NAME,
            self.out_dir / METRICS_NAME,
            start_time,
        )
        if resume and loop.state_path.is_file():
            meta, tensors = load_train_state(loop.state_path)
            check_state_fits(loop.state_path, meta, tensors, self.fingerprint(), self.params, total)
            restore_train_state(meta, tensors, self.params, optimizer)
            loop.step, loop.skipped = int(meta["step"]), int(meta.get("skipped", 0))
            self.last_step = loop.step
            _truncate_metrics(loop.metrics_path, loop.step)
        elif self.rank == 0 and loop.metrics_path.exists():
            loop.metrics_path.unlink()
        return loop

    def _step(self, loop: _Loop, chunk: list[int]) -> _Step:
        """One optimiser step on the global batch ``chunk`` (this process's share of it); a step with a
        non-finite loss or gradient is skipped, and too many of them stop the run."""
        cfg = self.config
        local = [self.items[i] for i in chunk[self.rank :: self.world]]
        # A sharded model all-gathers its weights in every forward and backward, so a rank left
        # without samples (the last, short batch) still runs one, on a sample weighted zero.
        filler = self.lockstep and not local
        lam = cfg.regularizer.lam_at(loop.step, loop.total)
        lr = cfg.optimizer.lr * cfg.schedule.lr_factor(loop.step, loop.total)
        for group in loop.optimizer.param_groups:
            group["lr"] = lr
        loop.optimizer.zero_grad(set_to_none=True)
        if filler:
            dummy = self.forward_items([self.items[chunk[0]]])
            loop.scaler.scale(dummy["task"].sum() * 0.0).backward()
            loop.optimizer.zero_grad(set_to_none=True)  # it adds nothing, whatever its values
        out = self.forward_items(local) if local else None
        if out is not None:
            terms = self.regularizer_terms(local, out["routing"])
            reg = terms.get("reg", torch.zeros_like(out["task"]))
            loss = (cfg.regularizer.task_weight * out["task"] + lam * reg).sum() / len(chunk)
            loop.scaler.scale(loss).backward()
        else:
            terms, loss = {}, None
        if out is not None or filler:
            loop.scaler.unscale_(loop.optimizer)
        loss_value, grad_norm = self.apply_step(loop.params, loss, loop.optimizer, loop.scaler)
        if not math.isfinite(grad_norm):
            loop.skipped += 1
            if loop.skipped > cfg.runtime.max_nonfinite_steps:
                kept = (
                    f"the last good state is in {loop.state_path}"
                    if loop.state_path.is_file()
                    else "no state was saved (use --runtime.save-every to keep one)"
                )
                raise RomaError(
                    f"stopped after {loop.skipped} steps with a non-finite loss or gradient; {kept} "
                    "(lower the learning rate or check the data)"
                )
        loop.step += 1
        self.last_step = loop.step
        return _Step(out, terms, local, lam, lr, loss_value, grad_norm)

    def _log(self, loop: _Loop, done: _Step, epoch: float) -> dict | None:
        """At a logged step, the step's record in ``metrics.jsonl`` and the trackers (rank 0), with a
        warning the first time a layer's routing collapses; the record, or None at other steps."""
        run = self.config.runtime
        if not (loop.step % run.log_every == 0 or loop.step == loop.total):
            return None
        figures = self._step_figures(done.out, done.terms, done.local)  # every rank: a collective
        if figures is None or self.rank != 0:
            return None
        record = {
            "step": loop.step,
            "epoch": epoch,
            **figures,
            "loss": done.loss_value,
            "lambda": done.lam,
            "lr": done.lr,
            "router_grad_norm": done.grad_norm,
            "skipped_steps": loop.skipped,
        }
        warn_on_collapse(record, self.info.num_experts, loop.warned, LOG)
        _append_jsonl(loop.metrics_path, record)
        if self.trackers:
            self.trackers.log(record)
        loop.last = record
        return record

    def _save_state_if_due(self, loop: _Loop) -> None:
        """Every ``runtime.save_every`` steps (not at the last), the resumable state (rank 0)."""
        every = self.config.runtime.save_every
        if every and loop.step % every == 0 and loop.step < loop.total and self.rank == 0:
            save_train_state(
                self.out_dir,
                loop.step,
                self.params,
                loop.optimizer,
                {**self.fingerprint(), "skipped": loop.skipped, "total_steps": loop.total},
            )

    def _finish(self, loop: _Loop) -> TrainResult:
        """After the last step: the router checkpoint and card (the saved state goes only once they are
        whole), the trackers' summary, and the routers back in the model's own dtype."""
        _sync(self.device)
        self.timings["loop_seconds"] = (
            time.perf_counter() - loop.start_time - self.timings["prefix_cache_seconds"]
        )
        if self.config.runtime.gradient_checkpointing:
            _activation_checkpointing(self.model, False)
            self.model.eval()
        seconds = time.perf_counter() - loop.start_time
        if self.rank == 0:
            with critical():  # a stop now waits: the checkpoint lands whole, and then the state goes
                self._save(seconds, loop.step)
                loop.state_path.unlink(missing_ok=True)
            if self.trackers:
                self.trackers.log_summary(
                    {**loop.last, "steps": loop.step, "train_seconds": seconds, "skipped_steps": loop.skipped}
                )
        # Back to the model's own dtype, so the tuned model runs without autocast like its base.
        for name, p in self.params.items():
            p.data = p.data.to(loop.original_dtypes[name])
        return TrainResult(self.out_dir, loop.step, seconds, self.layers, loop.last, loop.skipped)

    def fingerprint(self) -> dict:
        """What a saved state must match to be resumed by this run (``state.check_state_fits``)."""
        return {
            "routing_sha256": self.routing_sha256,
            "base_model": self.base_model,
            "config": self.config.to_dict(),
        }

    def apply_step(
        self, params: list[torch.nn.Parameter], loss: torch.Tensor | None, optimizer, scaler
    ) -> tuple[float, float]:
        """Reduce, check, clip and apply the router gradients; returns (loss, gradient norm).

        One device synchronisation per step: the loss and the total gradient norm are read together,
        and a non-finite value in either (a NaN or inf anywhere in the gradients makes the norm
        non-finite) skips the step on every process alike. A skipped step returns a NaN norm.
        """
        grads = [p.grad for p in params if p.grad is not None]
        bad_loss = (
            torch.zeros((), device=self.device) if loss is None else (~torch.isfinite(loss.detach())).float()
        )
        # Each process's loss is its share of the batch's sum over the whole batch size: summed over the
        # processes it is the batch's loss (what metrics.jsonl logs), not rank 0's share.
        loss_t = torch.zeros((), device=self.device) if loss is None else loss.detach().float()
        if self.world > 1:
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)
            both = torch.stack([loss_t, bad_loss])
            dist.all_reduce(both)
            loss_t, bad_loss = both[0], both[1]
            grads = [p.grad for p in params]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
        loss_value, grad_norm, bad = torch.stack([loss_t, norm.float(), bad_loss]).tolist()
        if bad or not math.isfinite(grad_norm):
            optimizer.zero_grad(set_to_none=True)
            scaler.update()
            return loss_value, float("nan")
        if self.config.optimizer.grad_clip is not None:
            torch.nn.utils.clip_grads_with_norm_(params, self.config.optimizer.grad_clip, norm)
        scaler.step(optimizer)
        scaler.update()
        return loss_value, grad_norm

    def _save(self, seconds: float, steps: int) -> None:
        extra = {
            "method": "roma" if self.regularizer == "manifold" else f"router_tuning[{self.regularizer}]",
            "hyperparameters": self.config.settings(),
            "seed": self.config.runtime.seed,
            "data_fingerprint": self.store.meta.get("json_sha256") or _store_fingerprint(self.store),
            "n_train": len(self.store),
            "n_successful": len(self.store.successful),
            "neighbour_graph": dict(self.graph.meta) if self.graph is not None else None,
            "steps": steps,
            "train_seconds": round(seconds, 3),
            "world_size": self.world,
            "moe_roma_version": __version__,
            "train_data": self.store.meta.get("data"),
            "train_tasks": dict(Counter(self.store.tasks)),
            **self.run_meta,
        }
        # Strict JSON whatever a value is: a non-finite float can never cost the trained routers here.
        save_router_checkpoint(self.model, self.info, self.layers, self.out_dir, finite_json(extra))
        write_run_card(self.out_dir, self.info.num_experts)


def write_run_card(out_dir: Path, num_experts: int, reports: list[dict] | None = None) -> Path:
    """The router folder's model card, from its config and the collapse seen in its ``metrics.jsonl``."""
    config = json.loads((out_dir / CONFIG_NAME).read_text(encoding="utf-8"))
    metrics = out_dir / METRICS_NAME
    records = (
        [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
        if (metrics.is_file())
        else []
    )
    card = build_model_card(config, reports or [], collapse_events(records, num_experts), kind="routers")
    return write_model_card(card, out_dir)


def _activation_checkpointing(model: PreTrainedModel, on: bool) -> None:
    """transformers 5.x renamed gradient checkpointing to activation checkpointing; use the one we have."""
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _store_fingerprint(store: RoutingStore) -> str:
    """SHA-256 of what training reads from a routing store: ids, prompts, answers, correctness, routing."""
    import hashlib

    h = hashlib.sha256()
    h.update(
        json.dumps(
            [
                store.ids,
                store.input_texts,
                store.is_correct,
                store.answer_index,
                store.layers,
                [list(c) if c else None for c in store.choices],
                store.continuations,
            ]
        ).encode()
    )
    h.update(store.routing.float().contiguous().numpy().tobytes())
    return h.hexdigest()


def _append_jsonl(path: Path, record: dict) -> None:
    """One strict JSON line: a NaN or infinite value (a skipped step's gradient norm) is written as null."""
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(finite_json(record), allow_nan=False) + "\n")
    except OSError as exc:  # a full disk or the file-size limit: one sentence naming the file
        raise RomaError(f"{path}: could not be written ({exc.strerror or exc})") from None


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after the resumed state, so the log reads as one run."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line torn by the kill
    path.write_text("".join(x + "\n" for x in keep), encoding="utf-8")


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def train_routers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    store: RoutingStore,
    config: TrainConfig,
    out_dir: str | Path,
    progress: bool = True,
    resume: bool = False,
    graph: NeighbourGraph | None = None,
    trackers: Trackers | None = None,
) -> TrainResult:
    """Post-train the routers of ``config.layers`` and write a router checkpoint into ``out_dir``
    (``trackers``: open experiment trackers that get every ``metrics.jsonl`` record too)."""
    return RouterTrainer(
        model, tokenizer, store, config, out_dir, graph=graph, progress=progress, trackers=trackers
    ).train(resume=resume)


register(
    MethodSpec(
        "train",
        "weights",
        TrainConfig,
        train_routers,
        "router post-training: RoMA (regularizer manifold), router tuning (none), ablations",
    )
)
