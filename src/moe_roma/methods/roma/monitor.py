"""What a training run watches at each logged step: routing entropy, expert utilisation, changed
top-k choices, and the two ways routing collapses (seed 000's monitoring)."""

from __future__ import annotations

import logging
import math

import torch

from moe_roma.methods.common import losses

ENTROPY_COLLAPSE = 0.1  # warn when mean routing entropy falls below this share of log(E)
UTILISATION_COLLAPSE = 0.5  # warn when one expert takes more than this share of the top-k slots


def routing_health(routing: torch.Tensor, layers: list[int], top_k: int, base_topk: torch.Tensor) -> dict:
    """Per tuned layer: mean entropy and min/max share of top-k slots; and the share of the batch whose
    top-k experts differ from the base model's (``base_topk`` (B, L, k), sorted)."""
    return health_from_sums(health_sums(routing, top_k, base_topk), layers, routing.shape[-1])


def health_sums(routing: torch.Tensor, top_k: int, base_topk: torch.Tensor) -> torch.Tensor:
    """What ``routing_health`` averages, as sums over the batch (float64): per layer the entropy and the
    top-k slot count of each expert, the samples whose top-k changed, and the batch size. Sums of
    several processes' batches add up to the sums of their union (``all_reduce``)."""
    r = routing.detach()
    ent = losses.routing_entropy(r).double().sum(0)  # (L,)
    top = r.topk(top_k, dim=-1).indices  # (B, L, k)
    counts = torch.stack(
        [torch.bincount(top[:, i].flatten(), minlength=r.shape[-1]) for i in range(r.shape[1])]
    )
    changed = (top.sort(-1).values != base_topk.to(top.device)).any(-1).any(-1).double().sum()
    size = torch.tensor([float(r.shape[0])], dtype=torch.float64, device=r.device)
    return torch.cat([ent, counts.double().flatten(), changed[None], size])


def health_from_sums(sums: torch.Tensor, layers: list[int], num_experts: int) -> dict:
    """``routing_health``'s figures from ``health_sums`` (of one batch, or added over processes)."""
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


def warn_on_collapse(metrics: dict, num_experts: int, warned: set, log: logging.Logger) -> None:
    """Log once per layer when its routing entropy or its expert utilisation collapses."""
    for layer, h in metrics["entropy"].items():
        if h < ENTROPY_COLLAPSE * math.log(num_experts) and ("entropy", layer) not in warned:
            warned.add(("entropy", layer))
            log.warning(
                "routing entropy in layer %s collapsed to %.3f nats (log E = %.2f)",
                layer,
                h,
                math.log(num_experts),
            )
    for layer, u in metrics["utilisation"].items():
        if u["max"] > UTILISATION_COLLAPSE and ("util", layer) not in warned:
            warned.add(("util", layer))
            log.warning(
                "expert utilisation in layer %s collapsed: one expert takes %.0f%% of top-k slots",
                layer,
                100 * u["max"],
            )


def collapse_events(records: list[dict], num_experts: int) -> list[str]:
    """What ``warn_on_collapse`` would have said over a run's ``metrics.jsonl`` records: one line per
    layer and kind, at the first step it happened (for the model card's failure modes). A skipped step's
    values are null in the file and count for nothing.

    >>> collapse_events([{"step": 3, "entropy": {"5": 0.01, "6": None}, "utilisation": {"5": {"max": 0.9}}}], 8)[1]
    'one expert took 90% of the top-k slots in layer 5 at step 3'
    """
    out, seen = [], set()
    for r in records:
        for layer, h in (r.get("entropy") or {}).items():
            if (
                isinstance(h, (int, float))
                and h < ENTROPY_COLLAPSE * math.log(num_experts)
                and ("entropy", layer) not in seen
            ):
                seen.add(("entropy", layer))
                out.append(
                    f"routing entropy in layer {layer} fell to {h:.3f} nats (log E = {math.log(num_experts):.2f}) "
                    f"at step {r.get('step')}"
                )
        for layer, u in (r.get("utilisation") or {}).items():
            if (
                isinstance(u, dict)
                and isinstance(u.get("max"), (int, float))
                and u["max"] > UTILISATION_COLLAPSE
                and ("util", layer) not in seen
            ):
                seen.add(("util", layer))
                out.append(
                    f"one expert took {100 * u['max']:.0f}% of the top-k slots in layer {layer} at step "
                    f"{r.get('step')}"
                )
    return out
