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
# Gate 2 (docs/control.md, "The gates' revision"): the marked drop at beta = 1 must reach this share of
# the harm ceiling, what the planted kind of misrouting costs the clean model when done exactly.
MARKED_DROP_SHARE = 0.5


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
    """The control's gates, from the base model and the clean routers only (no method runs), every one
    over the marked (or plain) items of the evaluation splits pooled:

    1. plain accuracy within 1 point of the clean model's;
    2. marked accuracy at least ``MARKED_DROP_SHARE`` of the harm ceiling below the clean model's,
       the ceiling being what the clean model loses on marked items with their last-token routing set
       to the target test's ``other_task`` control (the planted misrouting done exactly);
    3. the target test on the marked items, neighbours from the RoMA training set (the testbed's
       ``train`` with ``marked_share`` marked): RoMA's target beats the corrupted routing and the
       random control beyond their intervals;
    4. the corruption moves marked items' routing (mean squared distance, corrupted to clean) at
       least 3x the floor of the manifold term (``manifold_floor``) for the marked items.
    """
    from moe_roma.testbed import load_testbed_splits

    splits = load_testbed_splits(0, testbed="downstream")
    tuned = discover_routers(clean).select_layers(layers)
    out, movement = _accuracy_gates(clean, corrupted, tokenizer, splits, tuned, log, position, sentences)
    out["marked_share"] = marked_share
    log("gates: the RoMA training set, the target test and the floor (corrupted routers)")
    train = marked_share_split(splits["train"], marked_share, seed, position, sentences)
    marked = [mark(ex, position, sentences) for split in EVAL_SPLITS for ex in splits[split]]
    tt, roma_train, items = marked_target_test(corrupted, tokenizer, train, marked, tuned)
    log("gates: the harm ceiling (clean routers)")
    ceiling_tt, _, _ = marked_target_test(clean, tokenizer, train, marked, tuned)
    floor = manifold_floor(roma_train, items)
    succ = roma_train.successful
    out["roma_training_set"] = {
        "n": len(roma_train),
        "successful": len(succ),
        "marked_share_of_successful": sum(is_marked_id(roma_train.ids[i]) for i in succ) / max(len(succ), 1),
    }
    out["target_test"], out["ceiling_target_test"] = tt, ceiling_tt
    out["floor"], out["movement"] = floor, movement
    ceiling = -100 * ceiling_tt["targets"]["other_task"]["net"]["diff"]
    out["gates"] = gate_verdicts(out["pooled"], tt, ceiling, movement, floor)
    return out


def _accuracy_gates(
    clean: PreTrainedModel,
    corrupted: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    splits: dict[str, list[MCExample]],
    tuned: list[int],
    log: Callable[[str], None],
    position: str,
    sentences: int,
) -> tuple[dict, float]:
    """Both models on both versions of every evaluation split: accuracies per split and pooled, and the
    marked items' mean squared routing move from the clean to the corrupted routers."""
    from moe_roma.scoring.stats import accuracy

    out: dict = {"splits": {}}
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
    out["pooled"] = {k: accuracy(v).acc for k, v in correct.items()}
    return out, float(torch.cat(moved).mean())


def gate_verdicts(pooled: dict, tt: dict, ceiling: float, movement: float, floor: float) -> dict:
    plain_drop = 100 * (pooled["clean_plain"] - pooled["corrupted_plain"])
    marked_drop = 100 * (pooled["clean_marked"] - pooled["corrupted_marked"])
    net_low, margin_low = tt["targets"]["roma"]["net"]["ci"][0], tt["margin"]["ci"][0]
    needed = MARKED_DROP_SHARE * ceiling
    return {
        "plain_within_1_point": {"value": plain_drop, "pass": abs(plain_drop) <= 1.0},
        "marked_drop": {
            "value": marked_drop,
            "harm_ceiling": ceiling,
            "min": needed,
            "pass": ceiling > 0 and marked_drop >= needed,
        },
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
