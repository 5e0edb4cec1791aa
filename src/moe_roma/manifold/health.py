"""Routing health: how a batch's routing is spread over experts, and the two ways it collapses.

One measure for every reader: the trainer's logged steps (``training.monitor``), the pre-training
study's records (``testbed.build``) and ``roma diagnose``'s report. It is computed from sums over
the items (``health_sums``), so that several processes' sums add up to their union's
(``all_reduce``) before ``health_from_sums`` turns them into means and shares.

>>> h = routing_health(torch.full((4, 1, 8), 1 / 8), top_k=2, layers=[5])
>>> round(h["entropy"]["5"], 3), collapse(h, 8)
(2.079, [])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

# Routing has collapsed in a layer when its mean entropy falls below this share of log(E) ...
ENTROPY_COLLAPSE = 0.1
# ... or when one expert takes more than this share of the layer's top-k slots.
UTILISATION_COLLAPSE = 0.5


def _entropy(routing: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each layer's distribution over experts: (N, L, E) -> (N, L)."""
    p = routing.clamp_min(1e-12)
    return -(routing * p.log()).sum(dim=-1)


def health_sums(routing: torch.Tensor, top_k: int, base_topk: torch.Tensor | None = None) -> torch.Tensor:
    """What ``routing_health`` averages, as sums over the items (float64): per layer the entropy and
    the top-k slot count of each expert, the items whose top-k differs from ``base_topk`` ((N, L, k),
    sorted; 0 without it) and the item count. ``routing`` is (N, L, E)."""
    r = routing.detach()
    ent = _entropy(r).double().sum(0)  # (L,)
    top = r.topk(top_k, dim=-1).indices  # (N, L, k)
    counts = torch.stack(
        [torch.bincount(top[:, i].flatten(), minlength=r.shape[-1]) for i in range(r.shape[1])]
    )
    if base_topk is None:
        changed = torch.zeros((), dtype=torch.float64, device=r.device)
    else:
        changed = (top.sort(-1).values != base_topk.to(top.device)).any(-1).any(-1).double().sum()
    size = torch.tensor([float(r.shape[0])], dtype=torch.float64, device=r.device)
    return torch.cat([ent, counts.double().flatten(), changed[None], size])


def health_from_sums(sums: torch.Tensor, layers: Sequence[int], num_experts: int) -> dict:
    """Per layer (keyed by its index as text): mean entropy and the min/max share of top-k slots; and
    the share of items whose top-k changed (``topk_changed``), from ``health_sums``."""
    n_layers = len(layers)
    sums = sums.detach().double().cpu()
    ent, n = sums[:n_layers], float(sums[-1])
    counts = sums[n_layers : n_layers + n_layers * num_experts].view(n_layers, num_experts)
    util = {}
    for i, layer in enumerate(layers):
        share = counts[i] / counts[i].sum()
        util[str(layer)] = {"min": float(share.min()), "max": float(share.max())}
    return {
        "entropy": {str(layer): float(ent[i]) / n for i, layer in enumerate(layers)},
        "utilisation": util,
        "topk_changed": float(sums[-2]) / n,
    }


def routing_health(
    routing: torch.Tensor,
    top_k: int,
    layers: Sequence[int] | None = None,
    base_topk: torch.Tensor | None = None,
) -> dict:
    """Per layer of (N, L, E) routing: mean entropy (nats) and the min/max share of top-k slots, keyed
    by ``layers`` (default 0..L-1); with ``base_topk``, also ``topk_changed``."""
    layers = list(range(routing.shape[1])) if layers is None else list(layers)
    out = health_from_sums(health_sums(routing, top_k, base_topk), layers, routing.shape[-1])
    if base_topk is None:
        del out["topk_changed"]
    return out


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def collapse(health: dict, num_experts: int) -> list[tuple[str, str, str]]:
    """The layers whose routing has collapsed, as ``(kind, layer, sentence)``, kind ``entropy`` or
    ``utilisation``. A missing value (a skipped training step's null) counts for nothing."""
    floor = ENTROPY_COLLAPSE * math.log(num_experts)
    out = []
    for layer, h in (health.get("entropy") or {}).items():
        if _number(h) and h < floor:
            out.append(
                (
                    "entropy",
                    layer,
                    f"routing entropy in layer {layer} collapsed to {h:.3f} nats "
                    f"(log E = {math.log(num_experts):.2f})",
                )
            )
    for layer, u in (health.get("utilisation") or {}).items():
        top = u.get("max") if isinstance(u, dict) else None
        if _number(top) and top > UTILISATION_COLLAPSE:
            out.append(
                (
                    "utilisation",
                    layer,
                    f"expert utilisation in layer {layer} collapsed: one expert takes {100 * top:.0f}% "
                    "of top-k slots",
                )
            )
    return out
