"""Routing alignment, router stability and routing health during testbed pre-training.

``L_total = L_lm + aux_coef * L_balance + lambda(t) * L_align + z_coef * L_z``, with ``L_align``:

``prior-kl``  ``E[sum_layers KL(p || q)]`` over every real token, q uniform or the
              token's document-task prior (the mean routing of that task over a short unaligned
              warm-up, then frozen): ``methods.common.losses.prior_kl_loss``;
``manifold``  RoMA's ``sum_j W_ij ||r_i - r_j||^2`` within each batch: r_i is document i's mean
              routing (layers concatenated), its neighbours the k most similar other documents of
              the batch by TF-IDF embedding of their tokens, W a Gaussian kernel on 1 - cosine
              (``manifold.graph.gaussian_kernel_weights``, ``losses.manifold_loss``); the
              neighbours' routing is a fixed target (detached), as RoMA's recorded r_j are.

lambda(t) is ``training.schedules.lambda_at``. Routing is the softmax of the router logits for
every family (for DeepSeek-V3's sigmoid router, a monotone reading of its scores), the same
distribution the load-balancing loss uses.
"""

from __future__ import annotations

import logging

import torch

from moe_roma.manifold.graph import gaussian_kernel_weights
from moe_roma.methods.common import losses
from moe_roma.training.schedules import lambda_at

log = logging.getLogger("moe_roma.testbed")


def routers(model) -> list[torch.nn.Module]:
    """The router modules in layer order (none for a dense model)."""
    if (
        getattr(model.config, "num_experts", None) is None
        and getattr(model.config, "n_routed_experts", None) is None
    ):
        return []
    from moe_roma.models.discovery import discover_routers

    info = discover_routers(model)
    return [info.routers[i].module for i in info.moe_layers]


def router_parameters(model) -> list[torch.nn.Parameter]:
    return [p for r in routers(model) for p in r.parameters()]


def apply_router_init(model, std: float, seed: int) -> None:
    """Near-zero router initialisation: weights N(0, std), so routing starts near uniform."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in router_parameters(model):
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def add_router_jitter(model, eps: float) -> list:
    """Switch's jitter: multiply each router's input by U(1-eps, 1+eps) while training."""

    def pre_hook(module, args):
        if not module.training:
            return None
        x = args[0]
        noise = torch.empty_like(x).uniform_(1.0 - eps, 1.0 + eps)
        return (x * noise, *args[1:])

    return [r.register_forward_pre_hook(pre_hook) for r in routers(model)]


def lambda_schedule(cfg, step: int) -> float:
    """lambda(t) at optimiser step ``step``; 0 during the task-prior warm-up."""
    start = cfg.align_prior_steps if (cfg.align == "prior-kl" and cfg.align_prior == "task") else 0
    if cfg.align == "none" or step < start:
        return 0.0
    total = max(cfg.steps - start, 1)
    warm = 0 if cfg.align_schedule == "fixed" else int(round(cfg.align_warmup * total))
    final = cfg.align_final if cfg.align_schedule == "warmup-anneal" else None
    return lambda_at(step - start, total, cfg.align_lambda, warm, final)


def routing_of(router_logits, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, L, E) routing distributions from the model's per-layer (B*T, E) router logits."""
    b, t = mask.shape
    return torch.stack([torch.softmax(lg.float(), dim=-1).view(b, t, -1) for lg in router_logits], dim=2)


def z_loss(router_logits, mask: torch.Tensor) -> torch.Tensor:
    """The router z-loss: mean over real tokens and layers of logsumexp(logits)^2."""
    m = mask.reshape(-1).bool()
    return torch.stack([torch.logsumexp(lg.float()[m], dim=-1).pow(2).mean() for lg in router_logits]).mean()


class TaskPrior:
    """Per-task mean routing (L, E), accumulated over the unaligned warm-up, then frozen."""

    def __init__(self, num_tasks: int) -> None:
        self.sums: torch.Tensor | None = None
        self.counts = torch.zeros(num_tasks)
        self.frozen: torch.Tensor | None = None

    def add(self, routing: torch.Tensor, mask: torch.Tensor, tasks: torch.Tensor) -> None:
        r = (routing.detach() * mask[..., None, None]).sum(1)  # (B, L, E) summed over real tokens
        if self.sums is None:
            self.sums = torch.zeros(len(self.counts), *r.shape[1:])
        self.sums.index_add_(0, tasks, r.cpu())
        self.counts.index_add_(0, tasks, mask.sum(1).float().cpu())

    def freeze(self) -> torch.Tensor:
        assert self.sums is not None, "the task prior saw no batch"
        e = self.sums.shape[-1]
        uniform = torch.full(self.sums.shape[1:], 1.0 / e)
        # A task the warm-up never met falls back to the uniform prior.
        mean = self.sums / self.counts.clamp_min(1)[:, None, None]
        self.frozen = torch.where(self.counts[:, None, None] > 0, mean, uniform)
        return self.frozen


def prior_kl(
    routing: torch.Tensor, mask: torch.Tensor, prior: torch.Tensor | None, tasks: torch.Tensor
) -> torch.Tensor:
    """Mean over real tokens of ``losses.prior_kl_loss`` (uniform q, or each document's task prior)."""
    b, t, n_layers, e = routing.shape
    flat = routing.reshape(b * t, n_layers, e)
    q = None if prior is None else prior.to(routing.device)[tasks].repeat_interleave(t, dim=0)  # (B*T, L, E)
    kl = losses.prior_kl_loss(flat, q).view(b, t)
    return (kl * mask).sum() / mask.sum()


def tfidf_embeddings(ids: torch.Tensor, mask: torch.Tensor, idf: torch.Tensor) -> torch.Tensor:
    """L2-normalised TF-IDF vectors (B, V) of the batch's documents, from their token ids."""
    counts = torch.zeros(ids.shape[0], idf.shape[0], device=ids.device)
    counts.scatter_add_(1, ids, mask.float())
    vec = counts * idf.to(ids.device)
    return vec / vec.norm(dim=1, keepdim=True).clamp_min(1e-12)


def manifold_in_batch(
    routing: torch.Tensor, mask: torch.Tensor, emb: torch.Tensor, k: int, sigma: float
) -> torch.Tensor:
    """RoMA's term within the batch: each document pulled towards its k nearest other documents' routing."""
    b = routing.shape[0]
    m = mask.float()
    doc = (routing * m[..., None, None]).sum(1) / m.sum(1)[:, None, None]  # (B, L, E)
    doc = doc.reshape(b, -1)
    sims = emb @ emb.T
    sims.fill_diagonal_(-2.0)  # a document is never its own neighbour
    k = min(k, b - 1)
    top_s, top_i = sims.topk(k, dim=1)
    weights = gaussian_kernel_weights(top_s, top_s > -2.0, sigma)
    return losses.manifold_loss(doc, doc.detach()[top_i], weights).mean()


def idf_of(seqs: list[tuple[list[int], list[float]]], vocab: int) -> torch.Tensor:
    """Smoothed inverse document frequency of every token over the pre-training sequences."""
    df = torch.zeros(vocab)
    for ids, _ in seqs:
        df[torch.tensor(sorted(set(ids)))] += 1
    return torch.log((1 + len(seqs)) / (1 + df)) + 1


def real_tokens(routing: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The (N, L, E) routing of the batch's real tokens, from (B, T, L, E) routing and its (B, T) mask."""
    return routing.detach().reshape(-1, *routing.shape[2:])[mask.reshape(-1).bool()]


def router_grad_norms(model_routers: list[torch.nn.Module]) -> dict[str, float]:
    """Each MoE layer's router gradient norm (before any clipping)."""
    out = {}
    for i, r in enumerate(model_routers):
        grads = [p.grad for p in r.parameters() if p.grad is not None]
        out[str(i)] = (
            float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))) if grads else 0.0
        )
    return out
