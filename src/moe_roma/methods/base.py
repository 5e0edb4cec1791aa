"""The contracts between a routing method and the code that runs it.

Methods import these, and ``methods/registry.py`` imports the methods: the imports run one way,
so no method needs the registry (``tests/test_architecture.py`` rejects the circle).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from moe_roma.io.config import Config


@dataclass
class NoConfig(Config):
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
    """What a test-time method returns: each item's correctness, and method-specific figures."""

    __test__ = False

    correct: list[bool]
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """One registered method: its kind, its config dataclass, its run function (None for ``base``)."""

    name: str
    kind: Literal["none", "weights", "test_time"]
    config: type
    run: Callable[..., Any] | None
    summary: str

    @property
    def seed_free(self) -> bool:
        """Whether the outcome is the same for every training seed (run once, reported for each)."""
        return self.kind != "weights"
