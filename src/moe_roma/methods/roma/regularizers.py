"""The regularisers of router post-training, one registry: name -> per-sample loss.

Each takes a ``RegularizerInputs`` and returns a (B,) tensor that carries the routers' graph; the
trainer adds ``lambda(t)`` times it to the task loss. ``manifold`` is RoMA's term; ``none`` is
plain router tuning; the others are ablations (weight distance, entropy, a fixed prior). Adding one
is a function and a line in ``REGULARIZERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from moe_roma.methods.common import losses


@dataclass
class RegularizerInputs:
    """What a regulariser may read for one step's local batch."""

    routing: torch.Tensor  # (B, L, E): r_i(theta), live from the routers being trained
    manifold: torch.Tensor | None  # (B,): sum_j W_ij ||r_i - r_j||^2, None without a neighbour graph
    params: list[torch.Tensor]  # the trained router weights
    base_params: list[torch.Tensor]  # their values before training
    world: int  # processes sharing the global batch


def _manifold(x: RegularizerInputs) -> torch.Tensor:
    assert x.manifold is not None, "the manifold regulariser needs a neighbour graph"
    return x.manifold


def _weight_distance(norm: str) -> Callable[[RegularizerInputs], torch.Tensor]:
    def term(x: RegularizerInputs) -> torch.Tensor:
        # One term for the whole step, spread over samples so that sum over the batch / batch equals it.
        whole = losses.weight_distance_loss(x.params, x.base_params, norm)
        return whole.expand(x.routing.shape[0]) / x.world

    return term


REGULARIZERS: dict[str, Callable[[RegularizerInputs], torch.Tensor] | None] = {
    "manifold": _manifold,
    "none": None,
    "l2": _weight_distance("l2"),
    "l1": _weight_distance("l1"),
    "entropy": lambda x: losses.entropy_loss(x.routing),
    "prior-kl": lambda x: losses.prior_kl_loss(x.routing),  # the uniform prior
}


# Fixed routing priors q of ``prior-kl``, by name (None: uniform, KL = log E - H(p)).
PRIORS: dict[str, torch.Tensor | None] = {"uniform": None}


def build_regularizer(config) -> Callable[[RegularizerInputs], torch.Tensor] | None:
    """The loss function of ``config.name`` (a ``RegularizerConfig``); None for plain router tuning."""
    if config.name == "prior-kl":
        prior = PRIORS[config.prior]
        return lambda x: losses.prior_kl_loss(x.routing, prior)
    return REGULARIZERS[config.name]
