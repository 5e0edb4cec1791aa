"""Every routing method, behind one registry: name -> (config dataclass, run function, kind).

Two kinds of method exist. A *weights* method changes the router weights and is then evaluated
like any model (``run(model, tokenizer, store, config, out_dir, graph=..., progress=...)``, e.g.
RoMA and router tuning, which differ only in ``regularizer.name``). A *test-time* method scores an
evaluation split itself, changing each item's routing while it answers
(``run(TestTimeInputs, config) -> TestTimeOutcome``, e.g. oracle routing and C3PO). ``base``
changes nothing. Adding a method is a module in ``methods/`` and one line in ``METHODS``.

>>> sorted(METHODS)
['base', 'c3po', 'oracle', 'train']
>>> METHODS["oracle"].config().steps
20
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from moe_roma.methods.c3po import C3POConfig, run_c3po
from moe_roma.methods.oracle import OracleConfig, run_oracle
from moe_roma.methods.roma.config import TrainConfig
from moe_roma.methods.roma.trainer import train_routers


@dataclass
class NoConfig:
    """The base model takes no settings."""


@dataclass
class TestTimeInputs:
    """What a test-time method may use on one evaluation split. Embeddings are computed on first use."""

    __test__ = False  # not a pytest class, whatever imports it

    model: Any
    tokenizer: Any
    info: Any  # MoEInfo
    layers: list[int]
    batch_size: int
    progress: bool
    eval_store: Any  # RoutingStore of the split, collected from the base model
    reference_store: Any  # RoutingStore of the training set: its successful items are the references
    eval_embeddings: Callable[[], Any]
    reference_embeddings: Callable[[], Any]


@dataclass
class TestTimeOutcome:
    __test__ = False

    correct: list[bool]
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    kind: Literal["none", "weights", "test_time"]
    config: type
    run: Callable[..., Any] | None
    summary: str

    @property
    def seed_free(self) -> bool:
        """Whether the outcome is the same for every training seed (run once, reported for each)."""
        return self.kind != "weights"


METHODS: dict[str, MethodSpec] = {
    "base": MethodSpec("base", "none", NoConfig, None, "the model as it is"),
    "train": MethodSpec("train", "weights", TrainConfig, train_routers,
                        "router post-training: RoMA (regularizer manifold), router tuning (none), ablations"),
    "oracle": MethodSpec("oracle", "test_time", OracleConfig, run_oracle,
                         "per-item gradient descent on routing with the true label (upper bound)"),
    "c3po": MethodSpec("c3po", "test_time", C3POConfig, run_c3po,
                       "test-time re-mixing of routing from successful neighbours (kernel or NGD)"),
}  # fmt: skip


def method(name: str) -> MethodSpec:
    """The registered method ``name``, or a ``RomaError`` listing the known ones."""
    from moe_roma.io.errors import RomaError

    if name not in METHODS:
        raise RomaError(f"unknown method kind {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]
