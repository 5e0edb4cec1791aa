"""How well routing matches the task-embedding manifold, and how routing is spread over experts."""

from __future__ import annotations

import numpy as np
import torch


def knn_overlap(
    embeddings: np.ndarray | torch.Tensor,
    routing: torch.Tensor,
    k: int = 5,
    max_queries: int = 5000,
    seed: int = 0,
    chunk: int = 1024,
) -> float:
    """Mean share of each item's k nearest neighbours in embedding space (cosine) that are also among
    its k nearest in routing space (Euclidean over the concatenated layers). 1 = same neighbourhoods;
    chance is about k / (n - 1).

    Neighbours are searched among all items, ``chunk`` query rows at a time, so memory grows with
    ``chunk x n``, never ``n x n``. Above ``max_queries`` items the mean is taken over that many
    random query items (fixed ``seed``): an unbiased estimate whose standard error is at most
    0.5 / sqrt(max_queries), 0.007 at the default.
    """
    emb = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
    r = routing.reshape(routing.shape[0], -1).float()
    n = emb.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return float("nan")
    queries = torch.arange(n)
    if n > max_queries:
        queries = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_queries].sort().values
    hits = 0
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        rows = torch.arange(len(q))
        e_sim = emb[q] @ emb.T
        e_sim[rows, q] = -float("inf")  # an item is not its own neighbour
        r_dist = torch.cdist(r[q], r)
        r_dist[rows, q] = float("inf")
        e_nn = e_sim.topk(k, dim=1).indices
        r_nn = (-r_dist).topk(k, dim=1).indices
        hits += int((e_nn.unsqueeze(2) == r_nn.unsqueeze(1)).any(2).sum())
    return hits / (len(queries) * k)


def linear_cka(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """Linear centred kernel alignment between two representations of the same items (0..1)."""
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64).reshape(len(x), -1)
    y = torch.as_tensor(np.asarray(y), dtype=torch.float64).reshape(len(y), -1)
    x = x - x.mean(0)
    y = y - y.mean(0)
    hsic = (x.T @ y).norm() ** 2
    return float(hsic / ((x.T @ x).norm() * (y.T @ y).norm()).clamp_min(1e-30))


def routing_entropy_per_layer(routing: torch.Tensor) -> list[float]:
    """Mean entropy (nats) of each layer's distribution over experts: (N, L, E) -> L values."""
    p = routing.float().clamp_min(1e-12)
    return (-(routing.float() * p.log()).sum(-1)).mean(0).tolist()


def expert_utilisation(routing: torch.Tensor, top_k: int) -> torch.Tensor:
    """Share of top-k slots each expert receives, per layer: (N, L, E) -> (L, E), rows sum to 1."""
    top = routing.topk(top_k, dim=-1).indices  # (N, L, k)
    e = routing.shape[-1]
    counts = torch.stack(
        [torch.bincount(top[:, layer].flatten(), minlength=e) for layer in range(routing.shape[1])]
    )
    return counts.float() / counts.sum(dim=1, keepdim=True)
