"""Shared fixtures for training tests: a collected routing store and a graph from random embeddings."""

from __future__ import annotations

import torch

from helpers.examples import make_examples
from helpers.tiny_models import build_tiny_model, build_tiny_tokenizer
from moe_roma.manifold.graph import NeighbourSearch, build_neighbour_graph
from moe_roma.routing.collect import collect_routing


def store_and_graph(
    family: str = "olmoe", n: int = 16, scoring: str = "letter", layers: str = "last2", seed: int = 0
):
    model = build_tiny_model(family, num_layers=4, seed=seed)
    tok = build_tiny_tokenizer()
    store, _ = collect_routing(model, tok, make_examples(n), layers=layers, scoring=scoring, progress=False)
    if not store.successful:  # a random model may miss every sample; mark some right for the graph
        store.is_correct = [i % 2 == 0 for i in range(len(store))]
    emb = torch.nn.functional.normalize(
        torch.randn(len(store), 8, generator=torch.Generator().manual_seed(3)), dim=1
    )
    graph = build_neighbour_graph(emb.numpy(), store.successful, NeighbourSearch(k=3, dedupe_threshold=1.01))
    return model, tok, store, graph
