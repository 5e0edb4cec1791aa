"""The contracts between a routing method and the code that runs it, and where methods register.

A method module imports this one, and calls ``register(MethodSpec(...))`` when it is imported.
``methods/registry.py`` imports only this module too: it names the built-in methods' modules and
imports them by name, so neither the registry imports a method nor a method the registry
(``tests/test_architecture.py`` rejects any import circle).

Two kinds of method change routing. A *weights* method changes the router weights and is then
evaluated like any model: ``run(model, tokenizer, store, config, out_dir, graph=..., progress=...,
trackers=..., resume=...) -> WeightsOutcome``, where ``store`` is the training routing and
``graph`` its neighbour graph (or None). A *test-time* method scores an evaluation split itself,
changing each item's routing while it answers: ``run(TestTimeInputs, config) -> TestTimeOutcome``.
``base`` changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

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


class WeightsOutcome(Protocol):
    """What a weights method's run returns, as far as the code that runs it reads it."""

    seconds: float  # the training's wall time
    steps: int  # optimiser steps taken
    tuned_layers: list[int]  # the decoder layers whose routers changed


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


_REGISTERED: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Make ``spec`` known by its name (``roma experiment``'s ``kind:``); a name is registered once."""
    known = _REGISTERED.get(spec.name)
    if known is not None and known != spec:
        raise ValueError(f"a method named {spec.name!r} is registered already ({known.summary})")
    _REGISTERED[spec.name] = spec
    return spec


def registered() -> dict[str, MethodSpec]:
    """Every registered method by name, in the order they registered (the dict itself, not a copy)."""
    return _REGISTERED


register(MethodSpec("base", "none", NoConfig, None, "the model as it is"))
