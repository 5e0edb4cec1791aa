"""The control's gates: measured on the clean and the corrupted model only, before any method runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma.data.example import MCExample
from moe_roma.models.discovery import discover_routers
from moe_roma.routing.collect import collect_routing
from moe_roma.routing.store import RoutingStore
from moe_roma.testbed.control.setting import is_marked_id, mark, marked_share_split

EVAL_SPLITS = ("in_dist", "shifted", "heldout_tasks")
# Gate 2's floor on the marked drop, in points at beta = 1 (docs/control.md, "Gate 2's revision").
MARKED_DROP_MIN = 15.0


def collect_store(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[MCExample],
    layers: list[int],
    embed: bool = False,
) -> RoutingStore:
    """The model's routing store of ``examples`` (continuation scoring), with question embeddings if asked."""
    store, _ = collect_routing(
        model, tokenizer, examples, layers=layers, scoring="continuation", progress=False
    )
    if embed:
        from moe_roma.manifold.embed import embed_texts

        store.embeddings = torch.as_tensor(embed_texts(list(store.questions)))
        store.meta["embedder"] = "all-MiniLM-L6-v2"
    return store


def marked_target_test(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: Sequence[MCExample],
    items: Sequence[MCExample],
    layers: list[int],
) -> tuple[dict, RoutingStore, RoutingStore]:
    """The target test of ``items`` on ``model``, neighbours from the successful items of ``train``.

    Returns the test's report and the two routing stores (the training set's, the items').
    """
    from moe_roma.diagnose.target_test import target_test

    train_store = collect_store(model, tokenizer, train, layers, embed=True)
    item_store = collect_store(model, tokenizer, items, layers, embed=True)
    report = target_test(
        model,
        tokenizer,
        train_store,
        train_store.embeddings.numpy(),
        items=item_store,
        item_embeddings=item_store.embeddings.numpy(),
        progress=False,
    )
    return report, train_store, item_store


def manifold_floor(train: RoutingStore, items: RoutingStore, k: int = 3, sigma: float = 0.4) -> float:
    """The manifold term's minimum over r_i: with r_i at its neighbours' kernel mean, what is left is their
    kernel-weighted spread around it; mean over ``items``, neighbours from ``train``'s successful set."""
    from moe_roma.manifold.graph import NeighbourSearch, build_neighbour_graph

    graph = build_neighbour_graph(
        train.embeddings.numpy(),
        train.successful,
        NeighbourSearch(k=k, sigma=sigma),
        queries=items.embeddings.numpy(),
    )
    neighbours = train.routing.float()[graph.indices.clamp_min(0)]
    w = graph.weights
    mean = (w[:, :, None, None] * neighbours).sum(1, keepdim=True)
    return float((w * ((neighbours - mean) ** 2).sum((2, 3))).sum(1).mean())


def measure_gates(
    clean: PreTrainedModel,
    corrupted: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    layers: str = "last5",
    marked_share: float = 0.5,
    seed: int = 0,
    log: Callable[[str], None] = lambda _: None,
    position: str = "before_question",
    sentences: int = 1,
) -> dict:
    """The control's gates, from the base model and the clean routers only (no method runs):

    1. plain accuracy within 1 point of the clean model's, on the evaluation splits pooled;
    2. marked accuracy at least ``MARKED_DROP_MIN`` points below the clean model's on marked items;
    3. the target test on marked in_dist items, neighbours from the RoMA training set (the
       testbed's ``train`` with ``marked_share`` marked): RoMA's target beats the corrupted routing
       and the random control beyond their intervals;
    4. the corruption moves marked items' routing (mean squared distance, corrupted to clean) at
       least 3x the floor of the manifold term (``manifold_floor``) for marked in_dist items.
    """
    from moe_roma.scoring.stats import accuracy
    from moe_roma.testbed import load_testbed_splits

    splits = load_testbed_splits(0, testbed="downstream")
    tuned = discover_routers(clean).select_layers(layers)
    out: dict = {"splits": {}, "marked_share": marked_share}
    moved: list[torch.Tensor] = []
    correct: dict[str, list[bool]] = {}
    for split in EVAL_SPLITS:
        plain, marked = splits[split], [mark(ex, position, sentences) for ex in splits[split]]
        log(f"gates: {split}")
        row = {
            f"{name}_{kind}": collect_store(model, tokenizer, exs, tuned)
            for name, model in (("clean", clean), ("corrupted", corrupted))
            for kind, exs in (("plain", plain), ("marked", marked))
        }
        out["splits"][split] = {k: accuracy(v.is_correct).acc for k, v in row.items()}
        moved.append(((row["corrupted_marked"].routing - row["clean_marked"].routing) ** 2).sum((1, 2)))
        for k, v in row.items():
            correct.setdefault(k, []).extend(v.is_correct)
    pooled = {k: accuracy(v).acc for k, v in correct.items()}
    out["pooled"] = pooled
    plain_drop = 100 * (pooled["clean_plain"] - pooled["corrupted_plain"])
    marked_drop = 100 * (pooled["clean_marked"] - pooled["corrupted_marked"])
    log("gates: the RoMA training set, clean floor and the target test")
    train = marked_share_split(splits["train"], marked_share, seed, position, sentences)
    marked_in_dist = [mark(ex, position, sentences) for ex in splits["in_dist"]]
    tt, roma_train, items = marked_target_test(corrupted, tokenizer, train, marked_in_dist, tuned)
    floor = manifold_floor(roma_train, items)
    movement = float(torch.cat(moved).mean())
    succ = roma_train.successful
    net_low, margin_low = tt["targets"]["roma"]["net"]["ci"][0], tt["margin"]["ci"][0]
    out["roma_training_set"] = {
        "n": len(roma_train),
        "successful": len(succ),
        "marked_share_of_successful": sum(is_marked_id(roma_train.ids[i]) for i in succ) / max(len(succ), 1),
    }
    out["target_test"] = tt
    out["floor"], out["movement"] = floor, movement
    out["gates"] = {
        "plain_within_1_point": {"value": plain_drop, "pass": abs(plain_drop) <= 1.0},
        "marked_drop": {"value": marked_drop, "min": MARKED_DROP_MIN, "pass": marked_drop >= MARKED_DROP_MIN},
        "target_test_passes": {
            "net_low": net_low,
            "margin_low": margin_low,
            "pass": net_low > 0 and margin_low > 0,
        },
        "movement_3x_floor": {
            "value": movement / floor if floor else float("inf"),
            "pass": movement >= 3 * floor,
        },
    }
    return out
