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


@dataclass
class DownstreamBuildConfig:
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
