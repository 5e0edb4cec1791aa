"""The neighbour graph: exact k-NN among successful samples, guards, kernels, chunking, caching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moe_roma.manifold.embed import embed_texts
from moe_roma.manifold.graph import (
    NeighbourSearch,
    build_neighbour_graph,
    gaussian_kernel_weights,
    load_graph,
    neighbour_graph_for_store,
)


def random_unit(n, d=16, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(emb, successful, k, dedupe):
    sims = emb @ emb[successful].T
    out = []
    for i in range(len(emb)):
        cand = [(s, j) for s, j in zip(sims[i], successful) if j != i and s <= dedupe]
        cand.sort(key=lambda t: -t[0])
        out.append([j for _, j in cand[:k]])
    return out


@pytest.mark.parametrize(("backend", "chunk"), [("torch", 1), ("torch", 7), ("torch", 4096), ("faiss", None)])
def test_knn_is_exact_excludes_self_and_duplicates_at_any_chunk_size(backend, chunk):
    emb = random_unit(50)
    emb[10] = emb[3]  # an exact duplicate of a successful sample
    successful = list(range(0, 50, 3))
    g = build_neighbour_graph(
        emb, successful, NeighbourSearch(k=3, dedupe_threshold=0.95), chunk_size=chunk, backend=backend
    )
    assert g.indices.tolist() == brute_force(emb, successful, 3, 0.95)
    assert 3 not in g.indices[10].tolist() and 3 not in g.indices[3].tolist()
    torch.testing.assert_close(g.weights.sum(1), torch.ones(50))


def clustered_with_duplicates(seed=0):
    """200 vectors; 30 near-copies of one vector, more than FAISS's first over-fetch of k + 8."""
    emb = random_unit(200, d=8, seed=seed)
    noise = np.random.default_rng(seed + 1).normal(size=(30, 8)).astype(np.float32)
    emb[:30] = emb[30] + 0.01 * noise
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


@pytest.mark.parametrize(
    "config",
    [NeighbourSearch(k=3), NeighbourSearch(k=5, dedupe_threshold=0.99), NeighbourSearch(epsilon=0.6)],
    ids=str,
)
def test_faiss_and_torch_search_return_the_same_graph(config):
    emb = clustered_with_duplicates()
    successful = list(range(0, 200, 2)) + [1, 3, 5]
    t = build_neighbour_graph(emb, successful, config, backend="torch", chunk_size=13)
    f = build_neighbour_graph(emb, successful, config, backend="faiss")
    assert torch.equal(t.indices, f.indices)
    torch.testing.assert_close(t.similarities, f.similarities, atol=1e-5, rtol=0)
    torch.testing.assert_close(t.weights, f.weights, atol=1e-5, rtol=0)
    # The duplicates really did exceed the first fetch: rows 0-29 need a second FAISS search.
    assert (t.indices[:30] >= 30).all() or config.epsilon is not None
    refs = build_neighbour_graph(emb, successful, config, queries=emb[:40], backend="torch")
    reff = build_neighbour_graph(emb, successful, config, queries=emb[:40], backend="faiss")
    assert torch.equal(refs.indices, reff.indices)


def test_faiss_backend_without_faiss_is_a_clear_error_and_auto_falls_back(monkeypatch):
    import sys

    from moe_roma.io.errors import RomaError

    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    emb = random_unit(20)
    with pytest.raises(RomaError, match="faiss-cpu"):
        build_neighbour_graph(emb, [0, 1, 2, 3], NeighbourSearch(k=2), backend="faiss")
    auto = build_neighbour_graph(emb, [0, 1, 2, 3], NeighbourSearch(k=2), backend="auto")
    assert auto.indices.tolist() == brute_force(emb, [0, 1, 2, 3], 2, 0.95)
    with pytest.raises(ValueError, match="backend"):
        build_neighbour_graph(emb, [0, 1], NeighbourSearch(k=1), backend="annoy")


def test_kernel_weights_follow_the_gaussian_of_cosine_distance():
    sims = torch.tensor([[0.9, 0.5, 0.1]])
    w = gaussian_kernel_weights(sims, torch.ones(1, 3), sigma=0.4)
    raw = torch.exp(-((1 - sims) ** 2) / (2 * 0.4**2))
    torch.testing.assert_close(w, raw / raw.sum())
    assert w[0, 0] > w[0, 1] > w[0, 2]


def test_epsilon_ball_and_random_neighbours():
    emb = random_unit(40, d=4, seed=1)
    successful = list(range(20))
    g = build_neighbour_graph(emb, successful, NeighbourSearch(epsilon=0.5))
    sims = emb @ emb.T
    for i in range(40):
        got = {j for j in g.indices[i].tolist() if j >= 0}
        want = {j for j in successful if j != i and 0.5 <= sims[i, j] <= 0.95}
        assert got == want
    r = build_neighbour_graph(emb, successful, NeighbourSearch(k=3, random=True, seed=5))
    assert all(i not in r.indices[i].tolist() for i in range(40))
    assert set(r.indices.flatten().tolist()) <= set(successful)
    assert not torch.equal(r.indices, build_neighbour_graph(emb, successful, NeighbourSearch(k=3)).indices)


def test_k_larger_than_the_successful_set_is_clamped_with_a_warning():
    with pytest.warns(UserWarning, match="k=5 is larger"):
        g = build_neighbour_graph(random_unit(10), [1, 2, 3], NeighbourSearch(k=5))
    assert g.k == 3 or (g.indices[:, 3:] == -1).all()


def test_queries_for_test_time_neighbours_never_exclude_a_reference_as_self():
    emb = random_unit(10)
    g = build_neighbour_graph(emb, [0, 1, 2], NeighbourSearch(k=1, dedupe_threshold=1.01), queries=emb[:3])
    assert g.indices[:, 0].tolist() == [0, 1, 2]


def test_real_embedder_groups_paraphrases_and_the_graph_cache_is_reused(tmp_path):
    texts = [
        "What is five plus three?",
        "How much is 5 added to 3?",
        "Name the capital of France.",
        "Which city is the capital of France?",
    ]
    emb = embed_texts(texts)
    assert emb.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2] and sims[2, 3] > sims[2, 1]

    class Store:
        questions = texts
        input_texts = texts
        successful = [0, 1, 2, 3]

    path = tmp_path / "g.safetensors"
    g1, _ = neighbour_graph_for_store(Store, NeighbourSearch(k=1), cache_path=path)
    assert g1.indices[:, 0].tolist() == [1, 0, 3, 2]
    stamp = path.stat().st_mtime_ns
    g2, _ = neighbour_graph_for_store(Store, NeighbourSearch(k=1), cache_path=path)
    assert path.stat().st_mtime_ns == stamp and torch.equal(g1.indices, g2.indices)
    loaded, _ = load_graph(path)
    assert loaded.meta["embedder"] == "all-MiniLM-L6-v2"
    neighbour_graph_for_store(Store, NeighbourSearch(k=2), cache_path=path)  # other settings: rebuilt
    assert path.stat().st_mtime_ns != stamp


def test_graphs_over_one_training_store_embed_its_texts_once(tmp_path, monkeypatch):
    """A sweep's settings differ in k, sigma or include_self, not in the texts: the comparison embeds
    the training texts once per embedder and builds every graph from those embeddings."""
    from types import SimpleNamespace

    import moe_roma.manifold.embed as embed_module
    from moe_roma.experiments.comparison import graph_for
    from moe_roma.methods.roma.config import train_config

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(6, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    calls = []

    def fake_embed(texts, embedder=None, progress=False):
        calls.append(len(texts))
        return vectors[: len(texts)]

    monkeypatch.setattr(embed_module, "embed_texts", fake_embed)
    texts = [f"q{i}" for i in range(6)]
    store = SimpleNamespace(questions=texts, input_texts=texts, successful=[0, 2, 3, 5])
    ctx = SimpleNamespace(out_dir=tmp_path, graphs={}, embeddings={})
    g3 = graph_for(ctx, train_config(graph={"k": 3}), store)
    g1 = graph_for(ctx, train_config(graph={"k": 1, "include_self": True}), store)
    assert calls == [6]
    want = build_neighbour_graph(vectors, store.successful, NeighbourSearch(k=1, include_self=True))
    assert torch.equal(g1.indices, want.indices) and g3.indices.shape[1] == 3
    with pytest.raises(ValueError, match="3 embeddings given for a store of 6 samples"):
        neighbour_graph_for_store(store, NeighbourSearch(k=1), embeddings=vectors[:3])


def test_the_tfidf_embedder_groups_texts_that_share_words():
    from moe_roma.manifold.embed import TFIDF_DIMS, embed_texts

    texts = [
        "How many legs does a spider have?",
        "How many legs does an insect have?",
        "Which river flows through Paris?",
        "Which river flows through Rome?",
        "What colour is a ripe banana?",
    ]
    emb = embed_texts(texts, "tfidf")
    assert emb.shape == (5, TFIDF_DIMS) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    np.fill_diagonal(sim, -1)
    assert sim.argmax(1)[:4].tolist() == [1, 0, 3, 2]
