"""Training configuration of a RoMA (or router-tuning) run: nested dataclasses, one typed loader.

Sections: ``optimizer`` (AdamW on the routers), ``schedule`` (epochs, batch, learning-rate
warm-up), ``regularizer`` (which term, lambda and its schedule), ``graph`` (the neighbourhoods
among successful samples) and ``runtime`` (seed, logging, checkpoints, device). Each section that
makes something has a ``build()``. Every setting has one name, its dotted path (``optimizer.lr``);
the base, ``moe_roma.io.config.Config``, reads YAML sections, dotted ``key=value`` lists and flags.

>>> cfg = TrainConfig.from_dict({"layers": "last3", "optimizer": {"lr": 3e-3}, "regularizer.name": "none"})
>>> cfg.optimizer.lr, cfg.regularizer.name, cfg.layers
(0.003, 'none', 'last3')
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from moe_roma.io.config import Config, edge, flatten, short_settings
from moe_roma.io.errors import RomaError
from moe_roma.scoring import TRAINING_SCORING, Scoring

# The names of ``methods.roma.regularizers.REGULARIZERS`` (tests/test_train.py checks they agree).
Regularizer = Literal["manifold", "none", "l2", "l1", "entropy", "prior-kl"]
LR_SCHEDULES = ("constant", "cosine")

NON_NEGATIVE = {"range": (0, None)}


def _m(help: str, **extra: Any) -> dict[str, Any]:
    return {"help": help, **extra}


@dataclass
class OptimizerConfig(Config):
    """AdamW on the router weights (fp32 master copies), with gradient clipping."""

    lr: float = field(default=7e-5, metadata=_m("AdamW learning rate (the paper's)", **NON_NEGATIVE))
    weight_decay: float = field(default=0.01, metadata=_m("AdamW weight decay (the paper's)", **NON_NEGATIVE))
    grad_clip: float | None = field(
        default=1.0,
        metadata=_m("maximum norm of the router gradients; none turns clipping off", range=(0, None)),
    )

    def build(self, params: list) -> Any:
        import torch

        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)


@dataclass
class ScheduleConfig(Config):
    """How long the run is and how the learning rate warms up."""

    epochs: int = field(
        default=3, metadata=_m("passes over the training samples (the paper's)", range=(1, None))
    )
    batch_size: int = field(
        default=32,
        metadata=_m("samples per optimiser step, over all processes together (the paper's)", range=(1, None)),
    )
    lr_schedule: Literal["constant", "cosine"] = field(
        default="constant", metadata=_m("`constant` or `cosine` after the linear warm-up")
    )
    warmup_steps: int | None = field(
        default=None,
        metadata=_m("warm-up length in steps; none means `warmup_ratio` of the run", **NON_NEGATIVE),
    )
    warmup_ratio: float = field(
        default=0.1,
        metadata=_m(
            "warm-up as a share of all steps. The public code's fixed 2000 steps outlast a 300-step run",
            range=(0, 1),
        ),
    )

    def lr_factor(self, step: int, total: int) -> float:
        """Multiplier of the base learning rate at optimiser step ``step`` of ``total``."""
        from moe_roma.training.schedules import lr_factor, resolve_warmup

        return lr_factor(
            step, total, resolve_warmup(self.warmup_steps, self.warmup_ratio, total), self.lr_schedule
        )


@dataclass
class RegularizerConfig(Config):
    """The term added to the task loss, and lambda(t): a linear warm-up, then constant or annealed."""

    name: Regularizer = field(
        default="manifold",
        metadata=_m("`manifold` (RoMA), `none` (plain router tuning), `l2`, `l1`, `entropy`, `prior-kl`"),
    )
    lam: float = field(
        default=0.8,
        metadata=_m("the regulariser's weight lambda after its warm-up (the paper's)", **NON_NEGATIVE),
    )
    lam_warmup_steps: int | None = field(
        default=None,
        metadata=_m(
            "lambda's linear warm-up from 0, in steps; none means `lam_warmup_ratio`", **NON_NEGATIVE
        ),
    )
    lam_warmup_ratio: float = field(
        default=0.1, metadata=_m("lambda's warm-up as a share of all steps", range=(0, 1))
    )
    lam_final: float | None = field(
        default=None,
        metadata=_m(
            "anneal lambda linearly to this value by the last step; none keeps `lam`", **NON_NEGATIVE
        ),
    )
    task_weight: float = field(
        default=1.0,
        metadata=_m(
            "the task loss's weight; 0 trains with the regulariser alone (an ablation)", **NON_NEGATIVE
        ),
    )
    prior: Literal["uniform"] = field(
        default="uniform", metadata=_m("the fixed routing prior q of `prior-kl`")
    )
    targets: Literal["base", "oracle"] = field(
        default="base",
        metadata=_m(
            "the neighbours' target routing: `base` (the paper's: the base routing of items it answers "
            "right) or `oracle` (also the oracle's routing of every item it gets wrong; an extension)"
        ),
    )
    oracle_steps: int = field(
        default=20,
        metadata=_m("with `targets: oracle`, gradient steps per wrong item at most", range=(0, None)),
    )

    def lam_at(self, step: int, total: int) -> float:
        from moe_roma.training.schedules import lambda_at, resolve_warmup

        warm = resolve_warmup(self.lam_warmup_steps, self.lam_warmup_ratio, total)
        return lambda_at(step, total, self.lam, warm, self.lam_final)

    def build(self) -> Any:
        """The regulariser's per-sample loss function (``moe_roma.methods.roma.regularizers``)."""
        from moe_roma.methods.roma.regularizers import build_regularizer

        return build_regularizer(self)


@dataclass
class GraphConfig(Config):
    """Each training sample's neighbourhood among the successful set, in sentence-embedding space."""

    k: int = field(default=3, metadata=_m("successful neighbours per sample (the paper's)", range=(1, None)))
    epsilon: float | None = field(
        default=None, metadata=_m("a cosine-similarity ball instead of k nearest neighbours", range=(-1, 1))
    )
    sigma: float = field(
        default=0.4,
        metadata=_m("width of the Gaussian kernel on `1 - cosine` (the paper's)", range=(1e-12, None)),
    )
    dedupe_threshold: float = field(
        default=0.95,
        metadata=_m(
            "neighbours more similar than this are near-duplicates and are skipped", range=(-1, 1.01)
        ),
    )
    random_neighbours: bool = field(
        default=False, metadata=_m("ablation: random successful samples instead of the nearest ones")
    )
    embedder: str | None = field(
        default=None,
        metadata=_m(
            "sentence-transformers name or folder, or 'tfidf' (lexical LSA, for ablations); "
            "none means the bundled all-MiniLM-L6-v2"
        ),
    )
    include_self: bool = field(
        default=False,
        metadata=_m("ablation: a successful sample is its own first neighbour (the public code's behaviour)"),
    )

    def build(self, seed: int = 0) -> Any:
        """The neighbour search settings (``moe_roma.manifold.graph.NeighbourSearch``)."""
        from moe_roma.manifold.graph import NeighbourSearch

        return NeighbourSearch(
            k=self.k,
            epsilon=self.epsilon,
            sigma=self.sigma,
            dedupe_threshold=self.dedupe_threshold,
            random=self.random_neighbours,
            seed=seed if self.random_neighbours else 0,
            include_self=self.include_self,
        )


@dataclass
class RuntimeConfig(Config):
    """Where and how the run executes; none of these change what is optimised."""

    seed: int = field(
        default=0, metadata=_m("order of the samples, and anything else random", range=(0, 2**32 - 1))
    )
    log_every: int = field(
        default=1, metadata=_m("write a `metrics.jsonl` line every N steps", range=(1, None))
    )
    save_every: int | None = field(
        default=None, metadata=_m("write a resumable state every N optimiser steps", range=(1, None))
    )
    max_nonfinite_steps: int = field(
        default=10,
        metadata=_m("stop after this many steps skipped for a non-finite loss or gradient", **NON_NEGATIVE),
    )
    prefix_cache: bool = field(
        default=True, metadata=_m("compute the frozen layers once and run only the tuned layers at each step")
    )
    prefix_cache_device_fraction: float = field(
        default=0.6,
        metadata=_m(
            "keep that cache on the accelerator when it fits in this share of its free memory; else pinned "
            "host memory",
            range=(0, 1),
        ),
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata=_m("recompute the tuned layers' activations in the backward pass, trading time for memory"),
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto", metadata=_m("the model's dtype: `auto` (its own), `float32`, `bfloat16`, `float16`")
    )
    device: str | None = field(
        default=None, metadata=_m("where to run; none means the first GPU if there is one, else the CPU")
    )
    device_map: str | None = field(
        default=None,
        metadata=_m(
            "`auto`: one process spreads the model over every visible GPU (accelerate's big-model "
            "placement; docs/scaling.md says when to prefer it to FSDP); none puts it whole on `device`"
        ),
    )
    attn_implementation: str | None = field(
        default=None,
        metadata=_m(
            "transformers' attention kernel (`sdpa`, `flash_attention_2`, `eager`, ...); none keeps its "
            "default, SDPA where available"
        ),
    )


@dataclass
class TrainConfig(Config):
    """Hyper-parameters of a RoMA run. Defaults follow the paper's released settings where it gives
    them (AdamW, lr 7e-5, weight decay 0.01, batch 32, 3 epochs, lambda 0.8, sigma 0.4, k = 3)."""

    # Earlier releases took a setting's unique leaf name (``lr``) and these flat names; they are
    # read at the edges (files, key=value, flags) with a warning naming the dotted one.
    LEGACY_NAMES: ClassVar[dict[str, str]] = {
        "task_loss": "scoring",
        "regularizer": "regularizer.name",
        "lambda": "regularizer.lam",
    }
    LEAF_NAMES: ClassVar[bool] = True

    layers: str = field(
        default="last5",
        metadata=_m(
            "tuned layers: `lastN`, `firstN`, `all` or a list such as `11,12,13`; "
            "`roma train` takes the routing file's recorded layers unless this is set"
        ),
    )
    position: Literal["last", "first"] = field(
        default="last",
        metadata=_m("the prompt token whose routing is aligned: `last` (RoMA) or `first` (ablation)"),
    )
    scoring: Scoring = field(
        default=TRAINING_SCORING,
        metadata=_m(
            "the task loss: `letter` (the answer letter's logit) or `continuation` (the choices' "
            "log-likelihoods); `roma train` takes the routing file's recorded scoring unless this is set"
        ),
    )
    max_length: int | None = field(
        default=None,
        metadata=_m(
            "longest prompt in tokens; longer ones keep their last tokens; none means the model's context",
            range=(1, None),
        ),
    )
    temperature: float = field(
        default=1.0, metadata=_m("router-logit temperature during training", range=(1e-6, None))
    )
    router_dropout: float = field(
        default=0.0,
        metadata=_m("dropout on the routers' input features during training", range=(0, 0.999999)),
    )
    allow_empty_successful: bool = field(
        default=False, metadata=_m("train without the manifold term when the base model got no sample right")
    )
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def check(self) -> None:
        """Cross-field rules the per-setting ranges cannot express."""
        from moe_roma.models.discovery import parse_layer_spec

        for name in ("lr", "weight_decay"):
            if not math.isfinite(getattr(self.optimizer, name)):
                raise RomaError(f"setting optimizer.{name} must be a finite number")
        if self.regularizer.task_weight == 0 and self.regularizer.name == "none":
            raise RomaError("setting regularizer.task_weight 0 with regularizer none leaves nothing to train")
        # The syntax now; whether the model has those layers, once it is loaded.
        try:
            parse_layer_spec(self.layers)
        except RomaError as exc:
            raise RomaError(f"setting 'layers': {exc}") from None

    def settings(self) -> dict:
        """Flat, in the short names of earlier releases: what ``router_config.json`` records and
        what an experiment's outcomes are keyed on (``moe_roma.io.config.short_settings``)."""
        return short_settings(self)

    def with_seed(self, seed: int) -> TrainConfig:
        """A copy trained with another ``runtime.seed`` (an experiment's seed), nothing else changed."""
        return dataclasses.replace(self, runtime=dataclasses.replace(self.runtime, seed=seed))


def train_config(**settings: Any) -> TrainConfig:
    """A checked ``TrainConfig`` from Python keywords: top-level settings, sections as mappings
    (``schedule={"epochs": 1}``), or dotted names (``**{"optimizer.lr": 3e-3}``).

    >>> train_config(layers="last3", optimizer={"lr": 3e-3}).optimizer.lr
    0.003
    """
    return TrainConfig.from_dict(edge(TrainConfig, flatten(TrainConfig, settings)))
