"""RoMA's loss terms. Every regulariser is a function of tensors that carry the routers' graph."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def choice_cross_entropy(scores: torch.Tensor, answers: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over each sample's per-choice scores, (B,): the task loss of both scorings.

    ``scores`` (B, C), C the largest choice count: the answer letters' next-token logits (``letter``)
    or the choices' summed log-likelihoods (``continuation``, lm-evaluation-harness's scores);
    ``valid`` masks choices beyond a sample's own.
    """
    logits = scores.float().masked_fill(~valid, float("-inf"))
    return F.cross_entropy(logits, answers, reduction="none")


def manifold_loss(routing: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_j W_ij ||r_i - r_j||^2`` per sample (B,).

    ``routing`` (B, D): r_i(theta), live from the routers being trained (layers concatenated);
    ``targets`` (B, K, D): the neighbours' recorded r_j; ``weights`` (B, K): W_ij, 0 for padding.
    """
    sq = ((routing.unsqueeze(1) - targets) ** 2).sum(dim=-1)
    return (weights * sq).sum(dim=1)


def routing_entropy(routing: torch.Tensor) -> torch.Tensor:
    """Entropy of each layer's distribution over experts: (B, L, E) -> (B, L)."""
    p = routing.clamp_min(1e-12)
    return -(routing * p.log()).sum(dim=-1)


def entropy_loss(routing: torch.Tensor) -> torch.Tensor:
    """Mean routing entropy over layers, per sample (B,): minimising it sharpens the routing."""
    return routing_entropy(routing).mean(dim=1)


def prior_kl_loss(routing: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
    """Alignment to a fixed routing prior: mean over layers of KL(p || q), per sample (B,).

    ``prior`` (E,) defaults to uniform, for which KL = log E - H(p).
    """
    e = routing.shape[-1]
    q = torch.full((e,), 1.0 / e, device=routing.device) if prior is None else prior.to(routing.device)
    p = routing.clamp_min(1e-12)
    return (routing * (p.log() - q.clamp_min(1e-12).log())).sum(dim=-1).mean(dim=1)


def weight_distance_loss(params: list[torch.Tensor], base: list[torch.Tensor], norm: str) -> torch.Tensor:
    """Distance of the router weights to the base ones: squared L2 or L1 (a scalar for the batch)."""
    terms = [((p - b) ** 2).sum() if norm == "l2" else (p - b).abs().sum() for p, b in zip(params, base)]
    return torch.stack(terms).sum()
