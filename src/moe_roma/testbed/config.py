"""The testbed build settings (a light module: the CLI reads it without importing torch).

``BuildConfig`` (in-domain) and ``DownstreamBuildConfig`` share ``ModelBuild``: the run, the model's
shape and the pre-training options; the downstream build changes some of its defaults and adds its
corpus. Every setting is checked against its type, choices and range by the one config base
(``moe_roma.io.config``), and ``check`` says what no single range can (``--top-k`` above
``--num-experts``). Both are recorded whole in a built model's ``build_info.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from moe_roma.io.config import Config, check_value, settings
from moe_roma.io.errors import RomaError
from moe_roma.testbed.tasks import DEFAULT_SIZES

# ``--arch``: "olmoe" is the testbed's own OLMoE shape from the config fields (the committed models);
# the others keep the same active FFN width, so that only how it is split into experts and routed
# changes between them (testbed/model_shapes.py).
Architecture = Literal["olmoe", "dense", "switch", "switch-16", "switch-32", "topk", "fine", "nested"]
Alignment = Literal["none", "prior-kl", "manifold"]
AlignSchedule = Literal["fixed", "warmup", "warmup-anneal"]
AlignPrior = Literal["uniform", "task"]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
ALIGNMENTS: tuple[str, ...] = get_args(Alignment)
ALIGN_SCHEDULES: tuple[str, ...] = get_args(AlignSchedule)
ALIGN_PRIORS: tuple[str, ...] = get_args(AlignPrior)

AT_LEAST_ONE = (1, None)
AT_LEAST_ZERO = (0, None)
POSITIVE = (1e-12, None)
SHARE = (0, 1)


def _s(default: Any, help: str = "", range: tuple | None = AT_LEAST_ZERO) -> Any:
    """A build setting; numbers are at least 0 unless ``range`` says otherwise."""
    number = isinstance(default, (int, float)) and not isinstance(default, bool)
    return field(default=default, metadata={"help": help, "range": range if number else None})


def _default(cls: type, name: str, default: Any) -> Any:
    """``cls``'s setting ``name`` with another default (its help and range kept)."""
    return field(default=default, metadata=cls.__dataclass_fields__[name].metadata)


@dataclass
class PretrainOptions(Config):
    """Architecture, alignment during pre-training and router stability (docs/pretraining-study.md).

    Every default is off, so a build without these options is the build of before they existed.
    """

    arch: Architecture = _s("olmoe", "the architecture at the testbed's active FFN width")
    # Routing alignment as a pre-training loss: L_total = L_lm + lambda(t) * L_align.
    align: Alignment = _s("none", "routing alignment during pre-training")
    align_lambda: float = _s(0.1, "the alignment term's weight")
    align_schedule: AlignSchedule = _s("fixed", "lambda over the aligned steps")
    align_warmup: float = _s(0.25, "share of the aligned steps over which lambda rises from 0", SHARE)
    align_final: float = _s(0.03, "warmup-anneal: lambda at the last step")
    align_prior: AlignPrior = _s("uniform", "prior-kl: uniform, or per task from an unaligned warm-up")
    align_prior_steps: int = _s(50, "length of that unaligned warm-up (counted in the step budget)")
    align_k: int = _s(3, "manifold: neighbours among the batch's documents", AT_LEAST_ONE)
    align_sigma: float = _s(0.4, "manifold: Gaussian kernel width on 1 - cosine", POSITIVE)
    # Router-stability practices (near-uniform start, slower and clipped router updates, jitter,
    # z-loss against large logits); 0 (or 1 for the multiplier) = off.
    router_init_std: float = _s(0.0, "> 0: re-initialise router weights N(0, std), near-uniform routing")
    router_lr_mult: float = _s(1.0, "router learning rate = lr x this", POSITIVE)
    router_clip: float = _s(0.0, "> 0: clip the routers' gradient norm to this before the global clip")
    router_jitter: float = _s(0.0, "> 0: Switch's multiplicative jitter U(1-eps, 1+eps) on the router input")
    router_z_loss: float = _s(0.0, "> 0: coefficient of the router z-loss mean(logsumexp(logits)^2)")
    metrics_every: int = _s(0, "> 0: write routing health to metrics.jsonl every N steps")

    def check(self) -> None:
        if self.align != "none" and self.arch == "dense":
            raise RomaError("--align needs routers: the dense architecture has none")
        steps = getattr(self, "steps", None)
        if (
            self.align == "prior-kl"
            and self.align_prior == "task"
            and steps is not None
            and not 0 < self.align_prior_steps < steps
        ):
            raise RomaError(
                "--align-prior task needs --align-prior-steps between 1 and --steps - 1 (the unaligned "
                "warm-up)"
            )


@dataclass
class ModelBuild(PretrainOptions):
    """What both testbeds' builds set: the run and the model's shape."""

    seed: int = _s(0, "the build's seed", None)
    steps: int = _s(5000, "pre-training steps", AT_LEAST_ONE)
    batch_size: int = _s(48, "documents per step", AT_LEAST_ONE)
    lr: float = _s(1.5e-3, "AdamW learning rate", POSITIVE)
    warmup: int = _s(200, "learning-rate warm-up steps")
    weight_decay: float = _s(0.01, "AdamW weight decay")
    # One thread by default: on busy cores two OpenMP threads were measured 5x slower than one
    # (they stall each other), and the thread count changes rounding.
    threads: int = _s(1, "torch CPU threads", AT_LEAST_ONE)
    device: str = _s(
        "cpu", "`cuda` only for quick calibration probes; the shipped models are CPU-built", None
    )
    hidden_size: int = _s(128, "model width", AT_LEAST_ONE)
    intermediate_size: int = _s(96, "each expert's FFN width", AT_LEAST_ONE)
    num_layers: int = _s(6, "MoE layers", AT_LEAST_ONE)
    num_heads: int = _s(4, "attention heads", AT_LEAST_ONE)
    num_experts: int = _s(8, "experts per layer", AT_LEAST_ONE)
    top_k: int = _s(2, "experts each token is routed to", AT_LEAST_ONE)
    router_aux_loss_coef: float = _s(0.01, "the load-balancing loss's weight")
    knowledge_repeats: int = _s(8, "times each fact appears in the pre-training corpus", AT_LEAST_ONE)
    eval_batch_size: int = _s(64, "items per scoring pass", AT_LEAST_ONE)

    def check(self) -> None:
        if self.top_k > self.num_experts:
            raise RomaError(f"--top-k {self.top_k} is more than --num-experts {self.num_experts}")
        if self.hidden_size % self.num_heads:
            raise RomaError(
                f"--hidden-size {self.hidden_size} is not divisible by --num-heads {self.num_heads}"
            )
        super().check()


@dataclass
class BuildConfig(ModelBuild):
    """Everything that determines the in-domain testbed model (recorded in ``build_info.json``)."""

    # Loss weight of question tokens relative to answer tokens (0 = answer-only loss).
    question_weight: float = _s(0.1, "loss weight of question tokens relative to answer tokens")
    pretrain_size: int = _s(DEFAULT_SIZES["pretrain"], "pre-training documents", AT_LEAST_ONE)


@dataclass
class DownstreamBuildConfig(ModelBuild):
    """Everything that determines the ``downstream`` testbed model (recorded in ``build_info.json``).

    The corpus fields are ``moe_roma.testbed.downstream.CorpusConfig``'s; see docs/testbed.md.
    """

    # Model shape: 8 MoE layers of 32 fine-grained experts, 4 active per token.
    intermediate_size: int = _default(ModelBuild, "intermediate_size", 32)
    num_layers: int = _default(ModelBuild, "num_layers", 8)
    num_experts: int = _default(ModelBuild, "num_experts", 32)
    top_k: int = _default(ModelBuild, "top_k", 4)
    knowledge_repeats: int = _default(ModelBuild, "knowledge_repeats", 6)
    # Pre-training corpus (downstream.CorpusConfig).
    family_docs: int = _s(1500, "documents per task family", AT_LEAST_ONE)
    worked_share: float = _s(0.35, "share of worked examples", SHARE)
    list_share: float = _s(0.25, "share of list documents", SHARE)
    qa_rate: float = _s(0.06, "rate of question-answer documents", SHARE)
    filler_share: float = _s(0.3, "share of general filler text", SHARE)
    filler_docs: int = _s(6000, "filler documents", AT_LEAST_ONE)
    # Measurement after the build: oracle routing on the last `tuned_layers` MoE layers.
    tuned_layers: int = _s(5, "MoE layers the oracle measurement tunes", AT_LEAST_ONE)
    oracle_steps: int = _s(20, "the oracle measurement's steps per item")

    def check(self) -> None:
        if self.tuned_layers > self.num_layers:
            raise RomaError(f"--tuned-layers {self.tuned_layers} is more than --num-layers {self.num_layers}")
        super().check()


def check_build_options(cfg: PretrainOptions) -> str | None:
    """One sentence naming the first build setting that is of the wrong type, out of its range, or
    inconsistent with another, or None (for a config built or changed in Python)."""
    try:
        cfg.validate()
    except RomaError as exc:
        return str(exc)
    return None


def check_pretrain_options(cfg: PretrainOptions) -> str | None:
    """The same, for the pre-training options alone (architecture, alignment, router stability)."""
    try:
        for s in settings(PretrainOptions):
            check_value(s, getattr(cfg, s.path))
        PretrainOptions.check(cfg)
    except RomaError as exc:
        return str(exc)
    return None
