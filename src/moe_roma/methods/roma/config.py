"""Training configuration: one dataclass, readable from YAML and overridable with ``key=value``."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path

from moe_roma.io.errors import RomaError
from moe_roma.io.yamlfile import load_yaml_mapping

REGULARIZERS = ("manifold", "none", "l2", "l1", "entropy", "prior-kl")
TASK_LOSSES = ("letter", "continuation")
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    """Hyper-parameters of a RoMA run. Defaults follow the paper's released settings where it gives
    them (AdamW, lr 7e-5, weight decay 0.01, batch 32, 3 epochs, lambda 0.8, sigma 0.4, k = 3)."""

    epochs: int = 3
    batch_size: int = 32
    lr: float = 7e-5
    weight_decay: float = 0.01
    lr_schedule: str = "constant"  # after the linear warm-up
    warmup_steps: int | None = None  # None: use warmup_ratio of the run
    warmup_ratio: float = 0.1
    grad_clip: float | None = 1.0  # max norm of the router gradients
    # Regulariser and its weight lambda(t): linear warm-up to `lam`, then optional anneal to lam_final.
    regularizer: str = "manifold"
    lam: float = 0.8
    lam_warmup_steps: int | None = None
    lam_warmup_ratio: float = 0.1
    lam_final: float | None = None  # anneal linearly to this by the last step (seed 000); None: keep lam
    prior: str = "uniform"  # for prior-kl
    # Neighbourhood of each sample among the successful set.
    k: int = 3
    epsilon: float | None = None
    sigma: float = 0.4
    dedupe_threshold: float = 0.95
    random_neighbours: bool = False
    embedder: str | None = None  # None: the bundled all-MiniLM-L6-v2
    # What is trained and how it is read.
    layers: str = "last5"
    position: str = "last"  # prompt token whose routing is aligned: last (RoMA) or first (ablation)
    task_loss: str = "letter"
    max_length: int = 1024
    temperature: float = 1.0  # router-logit temperature during training (seeds 000 / 002)
    router_dropout: float = 0.0  # dropout on the router's input features during training
    allow_empty_successful: bool = False  # train without the manifold term when S is empty
    prefix_cache: bool = True  # run only the tuned layers at each step
    # The cache stays on the accelerator when it fits in this share of its free memory, else pinned host memory.
    prefix_cache_device_fraction: float = 0.6
    gradient_checkpointing: bool = False  # recompute the tuned layers' activations in backward
    seed: int = 0
    log_every: int = 1
    save_every: int | None = None  # resumable state every N optimiser steps
    max_nonfinite_steps: int = 10  # stop after this many skipped non-finite steps
    dtype: str = "auto"
    device: str | None = None
    attn_implementation: str | None = None  # transformers' attention kernel; None: its default (SDPA)

    def validate(self) -> TrainConfig:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise RomaError(msg)

        need(self.regularizer in REGULARIZERS, f"regularizer must be one of {', '.join(REGULARIZERS)}")
        need(self.task_loss in TASK_LOSSES, f"task_loss must be one of {', '.join(TASK_LOSSES)}")
        need(self.position in ("last", "first"), "position must be last or first")
        need(self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}")
        need(self.epochs >= 1, "epochs must be at least 1")
        need(self.batch_size >= 1, "batch_size must be at least 1")
        need(self.k >= 1, "k must be at least 1")
        need(self.sigma > 0, "sigma must be positive")
        need(self.temperature > 0, "temperature must be positive")
        need(0 <= self.router_dropout < 1, "router_dropout must be in [0, 1)")
        need(0 <= self.prefix_cache_device_fraction <= 1, "prefix_cache_device_fraction must be in [0, 1]")
        for name in ("lr", "weight_decay", "lam", "warmup_ratio", "lam_warmup_ratio"):
            value = getattr(self, name)
            need(math.isfinite(value) and value >= 0, f"{name} must be a finite number >= 0")
        need(self.epsilon is None or -1 <= self.epsilon <= 1, "epsilon is a cosine similarity in [-1, 1]")
        need(self.save_every is None or self.save_every >= 1, "save_every must be at least 1")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _coerce(name: str, text: str, current):
    """Parse a ``key=value`` override to the type of the field's default."""
    field_type = {f.name: f.type for f in fields(TrainConfig)}[name]
    if text.lower() in ("none", "null") and "None" in str(field_type):
        return None
    try:
        if "bool" in str(field_type):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if "int" in str(field_type) and "float" not in str(field_type):
            return int(text)
        if "float" in str(field_type):
            return float(text)
    except ValueError:
        raise RomaError(f"override {name}={text!r}: expected {field_type}") from None
    return text


def _checked(path: Path, name: str, value):
    """A YAML setting's value if it has the field's type (an integer, or a string such as 7e-5, passes for a float)."""
    field_type = str({f.name: f.type for f in fields(TrainConfig)}[name])
    if value is None and "None" in field_type:
        return value
    if "bool" in field_type:
        ok = isinstance(value, bool)
    elif "int" in field_type and "float" not in field_type:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif "float" in field_type:
        if isinstance(value, str):  # YAML 1.1 reads 7e-5 (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise RomaError(f"{path}: setting {name!r} must be {field_type}, got {value!r}")
    return value


def load_train_config(path: str | Path | None = None, overrides: list[str] | None = None, **explicit) -> TrainConfig:
    """Defaults <- YAML file <- explicit options <- ``key=value`` overrides."""
    values: dict = {}
    known = {f.name for f in fields(TrainConfig)}
    if path is not None:
        p = Path(path)
        loaded = load_yaml_mapping(p, "config file", "a mapping of training settings")
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise RomaError(f"{p}: unknown settings {unknown}")
        values.update({key: _checked(p, key, value) for key, value in loaded.items()})
    values.update({k: v for k, v in explicit.items() if v is not None})
    for item in overrides or []:
        if "=" not in item:
            raise RomaError(f"override {item!r} is not key=value")
        key, text = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in known:
            raise RomaError(f"override {key!r} is not a training setting")
        values[key] = _coerce(key, text.strip(), values.get(key))
    return TrainConfig(**values).validate()
