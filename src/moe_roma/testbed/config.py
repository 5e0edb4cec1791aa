"""The testbed build settings (a light module: the CLI reads it without importing torch)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from moe_roma.testbed.tasks import DEFAULT_SIZES

# ``--arch``: "olmoe" is the testbed's own OLMoE shape from the config fields (today's models);
# the others are seed 000's architectures at the same active FFN width (testbed/model_shapes.py).
ARCHITECTURES: tuple[str, ...] = (
    "olmoe",
    "dense",
    "switch",
    "switch-16",
    "switch-32",
    "topk",
    "fine",
    "nested",
)
ALIGNMENTS: tuple[str, ...] = ("none", "prior-kl", "manifold")
ALIGN_SCHEDULES: tuple[str, ...] = ("fixed", "warmup", "warmup-anneal")
ALIGN_PRIORS: tuple[str, ...] = ("uniform", "task")


@dataclass
class PretrainOptions:
    """Architecture, alignment during pre-training and router stability (docs/pretraining-study.md).

    Every default is off, so a build without these options is the build of before they existed.
    """

    arch: str = "olmoe"
    # Seed 000's L_total = L_lm + lambda(t) * L_align during pre-training.
    align: str = "none"
    align_lambda: float = 0.1
    align_schedule: str = "fixed"
    align_warmup: float = 0.25  # share of the aligned steps over which lambda rises from 0
    align_final: float = 0.03  # warmup-anneal: lambda at the last step
    align_prior: str = "uniform"  # prior-kl: uniform, or per task from an unaligned warm-up, then frozen
    align_prior_steps: int = 50  # length of that unaligned warm-up (counted in the step budget)
    align_k: int = 3  # manifold: neighbours among the batch's documents
    align_sigma: float = 0.4  # manifold: Gaussian kernel width on 1 - cosine
    # Seed 002's router-stability practices; 0 (or 1 for the multiplier) = off.
    router_init_std: float = 0.0  # > 0: re-initialise router weights N(0, std), near-uniform routing
    router_lr_mult: float = 1.0  # router learning rate = lr x this
    router_clip: float = 0.0  # > 0: clip the routers' gradient norm to this before the global clip
    router_jitter: float = 0.0  # > 0: Switch's multiplicative jitter U(1-eps, 1+eps) on the router input
    router_z_loss: float = 0.0  # > 0: coefficient of the router z-loss mean(logsumexp(logits)^2)
    metrics_every: int = 0  # > 0: write routing health to metrics.jsonl every N steps


# What each numeric build setting may be; a setting not listed here must be >= 0 (and finite).
AT_LEAST_ONE = {
    "steps",
    "batch_size",
    "threads",
    "hidden_size",
    "intermediate_size",
    "num_layers",
    "num_heads",
    "num_experts",
    "top_k",
    "pretrain_size",
    "eval_batch_size",
    "family_docs",
    "filler_docs",
    "knowledge_repeats",
    "tuned_layers",
    "align_k",
}
POSITIVE = {"lr", "align_sigma", "router_lr_mult"}
SHARES = {"worked_share", "list_share", "qa_rate", "filler_share", "align_warmup"}
SIGNED = {"seed"}


def check_build_options(cfg: Any) -> str | None:
    """One sentence naming the first build setting that is of the wrong type, out of its range, or
    inconsistent with another (``--top-k`` above ``--num-experts``), or None; checked before any work,
    so that no build stops at its end over a setting."""
    for f in fields(cfg):
        value, option = getattr(cfg, f.name), "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            continue
        wanted = int if isinstance(default, int) else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted):
            return f"{option} must be {'an integer' if wanted is int else 'a number'}, got {value!r}"
        if not math.isfinite(value):
            return f"{option} must be a finite number, got {value!r}"
        if f.name in SIGNED:
            continue
        if f.name in AT_LEAST_ONE and value < 1:
            return f"{option} must be at least 1, got {value!r}"
        if f.name in POSITIVE and value <= 0:
            return f"{option} must be greater than 0, got {value!r}"
        if f.name in SHARES and not 0 <= value <= 1:
            return f"{option} is a share: it must lie in [0, 1], got {value!r}"
        if value < 0:
            return f"{option} must be at least 0, got {value!r}"
    if cfg.top_k > cfg.num_experts:
        return f"--top-k {cfg.top_k} is more than --num-experts {cfg.num_experts}"
    if cfg.hidden_size % cfg.num_heads:
        return f"--hidden-size {cfg.hidden_size} is not divisible by --num-heads {cfg.num_heads}"
    if getattr(cfg, "tuned_layers", 0) > cfg.num_layers:
        return f"--tuned-layers {cfg.tuned_layers} is more than --num-layers {cfg.num_layers}"
    return check_pretrain_options(cfg)


def check_pretrain_options(cfg: PretrainOptions) -> str | None:
    """One sentence naming the first invalid option, or None."""
    for name, value, known in (
        ("arch", cfg.arch, ARCHITECTURES),
        ("align", cfg.align, ALIGNMENTS),
        ("align-schedule", cfg.align_schedule, ALIGN_SCHEDULES),
        ("align-prior", cfg.align_prior, ALIGN_PRIORS),
    ):
        if value not in known:
            return f"--{name} {value!r} is not one of {', '.join(known)}"
    if cfg.align != "none" and cfg.arch == "dense":
        return "--align needs routers: the dense architecture has none"
    if cfg.align_lambda < 0 or cfg.align_final < 0 or not 0 <= cfg.align_warmup <= 1:
        return "--align-lambda and --align-final must be >= 0 and --align-warmup a share in [0, 1]"
    if cfg.align_k < 1 or cfg.align_sigma <= 0 or cfg.align_prior_steps < 0:
        return "--align-k must be >= 1, --align-sigma > 0 and --align-prior-steps >= 0"
    if cfg.align == "prior-kl" and cfg.align_prior == "task" and not 0 < cfg.align_prior_steps < cfg.steps:
        return (
            "--align-prior task needs --align-prior-steps between 1 and --steps - 1 (the unaligned warm-up)"
        )
    if (
        min(cfg.router_init_std, cfg.router_clip, cfg.router_jitter, cfg.router_z_loss) < 0
        or cfg.router_lr_mult <= 0
    ):
        return "the router-stability options must be >= 0 (--router-lr-mult > 0)"
    return None


@dataclass
class BuildConfig(PretrainOptions):
    """Everything that determines the built model (recorded in ``build_info.json``)."""

    seed: int = 0
    steps: int = 5000
    batch_size: int = 48
    lr: float = 1.5e-3
    warmup: int = 200
    weight_decay: float = 0.01
    # Loss weight of question tokens relative to answer tokens (0 = answer-only loss).
    question_weight: float = 0.1
    knowledge_repeats: int = 8
    # One thread by default: on a shared 2-core machine two OpenMP threads were measured
    # 5x slower than one (they stall each other), and the thread count changes rounding.
    threads: int = 1
    device: str = "cpu"  # "cuda" only for quick calibration probes; the shipped model is CPU-built
    # Model shape.
    hidden_size: int = 128
    intermediate_size: int = 96
    num_layers: int = 6
    num_heads: int = 4
    num_experts: int = 8
    top_k: int = 2
    router_aux_loss_coef: float = 0.01
    pretrain_size: int = DEFAULT_SIZES["pretrain"]
    eval_batch_size: int = 64


@dataclass
class DownstreamBuildConfig(PretrainOptions):
    """Everything that determines the ``downstream`` testbed model (recorded in ``build_info.json``).

    The corpus fields are ``moe_roma.testbed.downstream.CorpusConfig``'s; see docs/testbed.md.
    """

    seed: int = 0
    steps: int = 5000
    batch_size: int = 48
    lr: float = 1.5e-3
    warmup: int = 200
    weight_decay: float = 0.01
    threads: int = 1  # see BuildConfig.threads
    device: str = "cpu"  # "cuda" only for quick calibration probes; the shipped model is CPU-built
    # Model shape: 8 MoE layers of 32 fine-grained experts, 4 active per token.
    hidden_size: int = 128
    intermediate_size: int = 32
    num_layers: int = 8
    num_heads: int = 4
    num_experts: int = 32
    top_k: int = 4
    router_aux_loss_coef: float = 0.01
    # Pre-training corpus (downstream.CorpusConfig).
    family_docs: int = 1500
    worked_share: float = 0.35
    list_share: float = 0.25
    qa_rate: float = 0.06
    filler_share: float = 0.3
    filler_docs: int = 6000
    knowledge_repeats: int = 6
    # Measurement after the build: oracle routing on the last `tuned_layers` MoE layers.
    tuned_layers: int = 5
    oracle_steps: int = 20
    eval_batch_size: int = 64
