"""The neighbour graph: each training sample's nearest successful samples and kernel weights.

For sample i, ``N(i)`` holds the k nearest members of the successful set S in embedding space
(itself and near-duplicates excluded), or every member within an epsilon-ball of cosine similarity.
Weights are a Gaussian kernel ``exp(-d^2 / 2 sigma^2)`` of the distance ``d = 1 - cosine``,
normalised over the neighbourhood. Search is exact and chunked: memory is bounded by
``chunk_size x |S|`` similarities, never the whole N x |S| matrix; FAISS is used when installed.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from moe_roma import __version__
from moe_roma.io.errors import DataError, RomaError, RomaWarning
from moe_roma.io.tensorfile import load_tensors, save_tensors

GRAPH_FORMAT_VERSION = 1


@dataclass
class NeighbourGraph:
    """Neighbours as padded (N, K) arrays of indices into the full sample list; -1 marks padding."""

    indices: torch.Tensor  # (N, K) long, index of neighbour j in the training samples, -1 = none
    weights: torch.Tensor  # (N, K) float32, W_ij; each row sums to 1 (or 0 when a sample has none)
    similarities: torch.Tensor  # (N, K) cosine similarity to each neighbour
    meta: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])

    def has_neighbours(self) -> torch.Tensor:
        return (self.indices >= 0).any(dim=1)


@dataclass(frozen=True)
class NeighbourSearch:
    """How each sample's neighbours are searched among the successful set and weighted. The user-facing
    settings are ``methods.roma.config.GraphConfig``, whose ``build()`` makes one of these."""

    k: int = 3
    epsilon: float | None = None  # cosine-similarity ball instead of k-NN when set
    sigma: float = 0.4
    dedupe_threshold: float = 0.95  # neighbours more similar than this are treated as duplicates
    random: bool = False  # ablation: random successful samples instead of nearest ones
    max_neighbours: int = 64  # cap for epsilon-balls, keeps the padded arrays small
    seed: int = 0
    include_self: bool = (
        False  # ablation (the public code's behaviour): a successful sample is its own first neighbour
    )


def gaussian_kernel_weights(similarities: torch.Tensor, valid: torch.Tensor, sigma: float) -> torch.Tensor:
    """``exp(-d^2 / 2 sigma^2)`` with ``d = 1 - cosine``, normalised over each row's valid entries."""
    d = 1.0 - similarities
    k = torch.exp(-(d**2) / (2 * sigma**2)) * valid
    total = k.sum(dim=1, keepdim=True)
    return torch.where(total > 0, k / total.clamp_min(1e-30), torch.zeros_like(k))


def _topk_chunked(
    queries: torch.Tensor, keys: torch.Tensor, k: int, exclude: torch.Tensor, dedupe: float, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k cosine neighbours, chunked over queries. ``exclude[i]`` is query i's own key index."""
    n = queries.shape[0]
    k_eff = min(k, keys.shape[0])
    sims_out = torch.full((n, k), -2.0)
    idx_out = torch.full((n, k), -1, dtype=torch.long)
    for start in range(0, n, chunk_size):
        q = queries[start : start + chunk_size]
        sims = q @ keys.T  # (chunk, |S|)
        rows = torch.arange(q.shape[0])
        own = exclude[start : start + chunk_size]
        has_own = own >= 0
        sims[rows[has_own], own[has_own]] = -2.0  # a sample is never its own neighbour
        sims[sims > dedupe] = -2.0  # near-duplicates would leak the answer, not share a task
        top_s, top_i = sims.topk(k_eff, dim=1)
        ok = top_s > -2.0
        sims_out[start : start + q.shape[0], :k_eff] = torch.where(ok, top_s, torch.full_like(top_s, -2.0))
        idx_out[start : start + q.shape[0], :k_eff] = torch.where(ok, top_i, torch.full_like(top_i, -1))
        del sims  # free this block before the next one is computed: one block at a time, not two
    return sims_out, idx_out


def build_neighbour_graph(
    embeddings: np.ndarray | torch.Tensor,
    successful: list[int],
    config: NeighbourSearch = NeighbourSearch(),
    queries: np.ndarray | torch.Tensor | None = None,
    chunk_size: int | None = None,
    memory_budget: int = 1 << 30,
    backend: str = "auto",
) -> NeighbourGraph:
    """Neighbours among the successful samples for every query (default: every training sample).

    ``embeddings`` are the training samples' normalised embeddings; ``successful`` the indices of S.
    With ``queries`` given (e.g. evaluation items for C3PO), no sample is excluded as "itself".
    ``backend`` picks the exact search: ``"torch"`` (chunked matrix products, memory bounded by
    ``memory_budget`` or ``chunk_size``), ``"faiss"`` (a flat index; faiss must be installed) or
    ``"auto"`` (FAISS when installed). Both give the same neighbours, up to the order of exact ties.

    >>> import numpy as np
    >>> e = np.eye(4, dtype=np.float32)
    >>> g = build_neighbour_graph(e, successful=[1, 2], config=NeighbourSearch(k=1))
    >>> g.indices[:, 0].tolist()
    [1, 2, 1, 1]
    """
    emb = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
    if not successful:
        raise RomaError("the successful set is empty: the base model answered no training sample right")
    # Each chunk holds chunk x |S| similarities (4 B) and a mask (1 B): keep them within the budget.
    chunk_size = chunk_size or max(1, min(4096, memory_budget // (5 * len(successful))))
    s_idx = torch.as_tensor(successful, dtype=torch.long)
    keys, q, pos_in_s = _keys_and_queries(emb, s_idx, queries)
    available = len(successful) - (1 if queries is None else 0)  # a sample is not its own neighbour
    if config.random:
        sims, idx_s = _random_neighbours(q, keys, pos_in_s, min(config.k, available), config.seed)
    elif config.epsilon is not None:
        sims, idx_s = _search(
            q, keys, config.max_neighbours, pos_in_s, config.dedupe_threshold, chunk_size, backend
        )
        inside = sims >= config.epsilon
        idx_s = torch.where(inside, idx_s, torch.full_like(idx_s, -1))
        sims = torch.where(inside, sims, torch.full_like(sims, -2.0))
    else:
        if config.k > available:
            warnings.warn(
                f"k={config.k} is larger than the successful set allows ({available}); using k={available}",
                RomaWarning,
                stacklevel=2,
            )
        k = max(1, min(config.k, available))
        sims, idx_s = _search(q, keys, k, pos_in_s, config.dedupe_threshold, chunk_size, backend)
    if config.include_self and queries is None:
        sims, idx_s = _with_self(sims, idx_s, pos_in_s, config.epsilon is None)
    return _graph(sims, idx_s, s_idx, config)


def _keys_and_queries(
    emb: torch.Tensor, s_idx: torch.Tensor, queries: np.ndarray | torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The successful samples' embeddings (the keys), the queries' (default: every sample's), and each
    query's position among the keys (-1: not a key, so nothing to exclude as itself)."""
    # No copy when every sample is a key (a large reference set of successes only).
    every = len(s_idx) == emb.shape[0] and bool((s_idx == torch.arange(len(s_idx))).all())
    keys = emb if every else emb[s_idx]
    if queries is None:
        pos_in_s = torch.full((emb.shape[0],), -1, dtype=torch.long)
        pos_in_s[s_idx] = torch.arange(len(s_idx))
        return keys, emb, pos_in_s
    q = torch.as_tensor(np.asarray(queries), dtype=torch.float32)
    return keys, q, torch.full((q.shape[0],), -1, dtype=torch.long)


def _graph(
    sims: torch.Tensor, idx_s: torch.Tensor, s_idx: torch.Tensor, config: NeighbourSearch
) -> NeighbourGraph:
    """The graph of the found neighbours (positions among the keys ``idx_s``, -1 for none): sample
    indices, kernel weights, similarities and the settings."""
    valid = idx_s >= 0
    indices = torch.where(valid, s_idx[idx_s.clamp_min(0)], torch.full_like(idx_s, -1))
    weights = gaussian_kernel_weights(sims.clamp(-1, 1), valid.float(), config.sigma)
    return NeighbourGraph(
        indices,
        weights,
        torch.where(valid, sims, torch.zeros_like(sims)),
        {
            "k": config.k,
            "epsilon": config.epsilon,
            "sigma": config.sigma,
            "dedupe_threshold": config.dedupe_threshold,
            "random": config.random,
            "seed": config.seed,
            "distance": "1-cosine",
            "include_self": config.include_self,
        },
    )


def _random_neighbours(
    q: torch.Tensor, keys: torch.Tensor, pos_in_s: torch.Tensor, k: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ablation: ``k`` successful samples drawn at random for every query (never itself)."""
    gen = torch.Generator().manual_seed(seed)
    idx_s = torch.empty((q.shape[0], k), dtype=torch.long)
    for i in range(q.shape[0]):
        perm = torch.randperm(keys.shape[0], generator=gen)
        idx_s[i] = perm[perm != pos_in_s[i]][:k]
    return (q.unsqueeze(1) * keys[idx_s]).sum(-1), idx_s


def _with_self(
    sims: torch.Tensor, idx_s: torch.Tensor, pos_in_s: torch.Tensor, keep_k: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """A successful sample takes itself (similarity 1) as its first neighbour, ahead of the others;
    with ``keep_k`` (k-NN, not an epsilon-ball), it keeps k neighbours in all: itself and the k - 1
    nearest others."""
    own = pos_in_s >= 0
    idx_s = torch.cat([torch.where(own, pos_in_s, -1).unsqueeze(1), idx_s], dim=1)
    sims = torch.cat([torch.where(own, 1.0, -2.0).unsqueeze(1), sims], dim=1)
    if keep_k:
        keep = torch.arange(idx_s.shape[1]).unsqueeze(0) < idx_s.shape[1] - own.long().unsqueeze(1)
        order = torch.argsort((~keep).long() * 2 + (idx_s < 0).long(), dim=1, stable=True)
        idx_s, sims = idx_s.gather(1, order)[:, :-1], sims.gather(1, order)[:, :-1]
        idx_s = torch.where(sims > -2.0, idx_s, -1)
    return sims, idx_s


SEARCH_BACKENDS = ("auto", "torch", "faiss")


def _search(q, keys, k, exclude, dedupe, chunk_size, backend):
    if backend not in SEARCH_BACKENDS:
        raise ValueError(f"backend must be one of {SEARCH_BACKENDS}, not {backend!r}")
    if backend == "torch":
        return _topk_chunked(q, keys, k, exclude, dedupe, chunk_size)
    try:
        import faiss  # noqa: F401  # optional: the same exact answer, multi-threaded and faster on a large S
    except ImportError:
        if backend == "faiss":
            raise RomaError(
                "neighbour search backend 'faiss' needs the faiss-cpu (or faiss-gpu) package"
            ) from None
        return _topk_chunked(q, keys, k, exclude, dedupe, chunk_size)
    return _faiss_search(q, keys, k, exclude, dedupe)


def _faiss_search(
    queries: torch.Tensor, keys: torch.Tensor, k: int, exclude: torch.Tensor, dedupe: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k by FAISS's flat inner-product index, with the same exclusions as ``_topk_chunked``.

    FAISS cannot skip a query's own key or its near-duplicates, so it fetches a few more than k
    and drops them; a row left short (many duplicates) is searched again with four times as many,
    until it has k or every key has been seen. The answer is therefore the same as the torch path's.
    """
    import faiss

    index = faiss.IndexFlatIP(keys.shape[1])
    index.add(np.ascontiguousarray(keys.numpy(), dtype=np.float32))
    n, n_keys = queries.shape[0], keys.shape[0]
    k_eff = min(k, n_keys)
    sims_out = torch.full((n, k), -2.0)
    idx_out = torch.full((n, k), -1, dtype=torch.long)
    todo = torch.arange(n)
    fetch = min(n_keys, k_eff + 8)
    while len(todo):
        s, i = index.search(np.ascontiguousarray(queries[todo].numpy(), dtype=np.float32), fetch)
        s, i = torch.from_numpy(s), torch.from_numpy(i).long()
        s = s.masked_fill((i == exclude[todo].unsqueeze(1)) | (s > dedupe) | (i < 0), -2.0)
        # Ties go to the lower key index, as in the torch path.
        by_index = i.argsort(dim=1, stable=True)
        s, i = s.gather(1, by_index), i.gather(1, by_index)
        top_s, order = s.sort(dim=1, descending=True, stable=True)
        top_s, top_i = top_s[:, :k_eff], i.gather(1, order[:, :k_eff])
        ok = top_s > -2.0
        done = ok.all(dim=1) | (fetch >= n_keys)
        rows = todo[done]
        sims_out[rows, :k_eff] = torch.where(ok[done], top_s[done], torch.full_like(top_s[done], -2.0))
        idx_out[rows, :k_eff] = torch.where(ok[done], top_i[done], torch.full_like(top_i[done], -1))
        todo, fetch = todo[~done], min(n_keys, 4 * fetch)
    return sims_out, idx_out


def texts_fingerprint(texts: list[str], successful: list[int], extra: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"texts": texts, "successful": successful, **extra}, sort_keys=True).encode())
    return h.hexdigest()


def save_graph(graph: NeighbourGraph, embeddings: np.ndarray, path: str | Path) -> None:
    """Save the graph and embeddings (safetensors; metadata JSON in the header), atomically."""
    tensors = {
        "indices": graph.indices.contiguous(),
        "weights": graph.weights.contiguous(),
        "similarities": graph.similarities.contiguous(),
        "embeddings": torch.as_tensor(np.asarray(embeddings), dtype=torch.float32).contiguous(),
    }
    save_tensors(
        path, tensors, {"format_version": GRAPH_FORMAT_VERSION, "package_version": __version__, **graph.meta}
    )


def load_graph(path: str | Path) -> tuple[NeighbourGraph, np.ndarray]:
    path = Path(path)
    meta, tensors = load_tensors(path, "neighbour-graph file")
    for key in ("indices", "weights", "similarities", "embeddings"):
        if key not in tensors:
            raise DataError(path, None, f"neighbour-graph file lacks tensor '{key}'")
    graph = NeighbourGraph(
        tensors["indices"].long(), tensors["weights"].float(), tensors["similarities"].float(), meta
    )
    return graph, tensors["embeddings"].numpy()


def embedding_text(question: str | None, input_text: str) -> str:
    """What gets embedded for a sample: its question when known (prompt boilerplate would make all
    samples look alike), else the full prompt."""
    return question if question else input_text


def neighbour_graph_for_store(
    store,
    config: NeighbourSearch = NeighbourSearch(),
    embedder: str | None = None,
    cache_path: str | Path | None = None,
    progress: bool = False,
    embeddings: np.ndarray | None = None,
) -> tuple[NeighbourGraph, np.ndarray]:
    """Embed a routing store's samples and build their graph, reusing ``cache_path`` when its
    embedder, texts, successful set and settings are unchanged. ``embeddings`` (the store's texts
    already embedded by ``embedder``) spare the embedding when several graphs share one store."""
    from moe_roma.manifold.embed import DEFAULT_EMBEDDER, embed_texts

    texts = [embedding_text(q, t) for q, t in zip(store.questions, store.input_texts)]
    settings = {
        "embedder": embedder or DEFAULT_EMBEDDER,
        "k": config.k,
        "epsilon": config.epsilon,
        "sigma": config.sigma,
        "dedupe_threshold": config.dedupe_threshold,
        "random": config.random,
        "seed": config.seed,
        **({"include_self": True} if config.include_self else {}),
    }
    fingerprint = texts_fingerprint(texts, store.successful, settings)
    if cache_path is not None and Path(cache_path).is_file():
        try:
            graph, emb = load_graph(cache_path)
            if graph.meta.get("fingerprint") == fingerprint:
                return graph, emb
        except DataError:
            pass  # unreadable cache: rebuild it
    if embeddings is not None and len(embeddings) != len(texts):
        raise ValueError(f"{len(embeddings)} embeddings given for a store of {len(texts)} samples")
    emb = embed_texts(texts, embedder, progress=progress) if embeddings is None else embeddings
    graph = build_neighbour_graph(emb, store.successful, config)
    graph.meta.update({"fingerprint": fingerprint, "embedder": settings["embedder"], "n": len(texts)})
    if cache_path is not None:
        save_graph(graph, emb, cache_path)
    return graph, emb
