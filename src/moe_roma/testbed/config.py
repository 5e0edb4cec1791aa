"""The testbed build settings (a light module: the CLI reads it without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass

from moe_roma.testbed.tasks import DEFAULT_SIZES


@dataclass
class BuildConfig:
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
