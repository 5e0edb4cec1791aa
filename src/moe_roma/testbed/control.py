"""A positive control for RoMA: misrouting planted in the `downstream` testbed's tuned routers.

Items that carry a marker sentence before ``Question:`` are routed like another task family's
items; plain items keep their clean routing. The sentence embedding sees the question only, so a
marked item's neighbours in RoMA's graph are marked and plain items of its own family alike.
Where the successful set is mostly plain items with clean routing, RoMA's target for a marked item
is clean routing of its own family: the precondition holds by construction, and a working RoMA
must move marked items back (docs/control.md holds the design, the gates and their calibration).

The corruption trains only the routers of the tuned layers, on a pool of items whose content
is disjoint from every split of the testbed (fresh suite seed, content keys checked):

- a marked item's last-token routing is pulled to ``(1 - beta) * clean + beta * partner``, where
  ``clean`` is the clean model's routing of that marked prompt and ``partner`` the clean mean
  routing of its partner family (a fixed derangement of the families);
- a plain item's routing is held at the clean model's, and so is its answer distribution
  (a KL anchor), so that plain accuracy stays where it was.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma.data.example import MCExample
from moe_roma.data.prompts import continuation_context
from moe_roma.methods.common.forward import items_forward
from moe_roma.methods.common.items import prepare_items
from moe_roma.methods.common.prefix import PrefixCache
from moe_roma.models.discovery import discover_routers
from moe_roma.routing.collect import collect_routing
from moe_roma.testbed.downstream import build_downstream_suite, content_keys, filler_sentence


# One in-vocabulary filler sentence (the corpus's own kind), the same for every marked item.
def marker_text(sentences: int = 1) -> str:
    """The marker: the first ``sentences`` filler sentences of a fixed stream, on one line."""
    rng = random.Random("roma-control:marker")
    return " ".join(filler_sentence(rng) for _ in range(sentences))


MARKER = marker_text(1)
# Fresh content for the corruption pool: this suite seed, minus every content key of the testbed's seed-0 splits.
POOL_SEED = 101


MARKER_POSITIONS = ("before_question", "before_answer")


def mark(example: MCExample, position: str = "before_question", sentences: int = 1) -> MCExample:
    """The marked version of an item: the marker sentence on its own line before ``Question:`` or before
    ``Answer:``; the question (what the sentence embedding reads) is unchanged."""
    prompt, marker = continuation_context(example), marker_text(sentences)
    if position == "before_question":
        context = f"{marker}\n{prompt}"
    elif position == "before_answer" and prompt.endswith("\nAnswer:"):
        context = f"{prompt[: -len('Answer:')]}{marker}\nAnswer:"
    else:
        raise ValueError(f"cannot place the marker {position!r} in {prompt!r}")
    return replace(
        example, id=f"{example.id}-marked", meta={**example.meta, "context": context, "marked": True}
    )


def is_marked(example: MCExample) -> bool:
    return bool(example.meta.get("marked"))


def partner_family(family: str, families: Sequence[str]) -> str:
    """The family whose routing a marked item of ``family`` is given: half-way round the sorted list."""
    names = sorted(families)
    return names[(names.index(family) + len(names) // 2) % len(names)]


def partner_map(family_mean: dict[str, torch.Tensor], rule: str) -> dict[str, str]:
    """Which family's routing each family's marked items get.

    ``derangement``: half-way round the sorted list (a different partner per family). ``farthest``:
    every family gets the family whose clean mean routing lies farthest from the mean over families
    (a fixed choice from the clean model alone), and that family gets the second farthest.
    """
    families = sorted(family_mean)
    if rule == "derangement":
        return {f: partner_family(f, families) for f in families}
    if rule != "farthest":
        raise ValueError(f"partner_rule must be 'derangement' or 'farthest', got {rule!r}")
    centre = torch.stack([family_mean[f] for f in families]).mean(0)
    ranked = sorted(families, key=lambda f: -float(((family_mean[f] - centre) ** 2).sum()))
    return {f: ranked[1] if f == ranked[0] else ranked[0] for f in families}


def corruption_pool(n: int, seed: int = POOL_SEED) -> list[MCExample]:
    """``n`` items of every family whose content keys lie in no split of the testbed (seed 0)."""
    used = set().union(*(content_keys(v) for v in build_downstream_suite(0).values()))
    fresh = [
        ex for split in build_downstream_suite(seed).values() for ex in split if ex.meta["key"] not in used
    ]
    random.Random(f"roma-control:pool:{seed}").shuffle(fresh)
    if len(fresh) < n:
        raise ValueError(f"the corruption pool has {len(fresh)} fresh items, fewer than the {n} asked for")
    return [replace(ex, id=f"pool-{ex.id}") for ex in fresh[:n]]


def marked_share_split(
    examples: Sequence[MCExample],
    share: float,
    seed: int = 0,
    position: str = "before_question",
    sentences: int = 1,
) -> list[MCExample]:
    """The items with a ``share`` of them (chosen at random, per family in proportion) marked."""
    rng = random.Random(f"roma-control:share:{seed}")
    out = list(examples)
    by_family: dict[str, list[int]] = {}
    for i, ex in enumerate(out):
        by_family.setdefault(ex.task, []).append(i)
    for rows in by_family.values():
        for i in rng.sample(rows, round(share * len(rows))):
            out[i] = mark(out[i], position, sentences)
    return out


@dataclass(frozen=True)
class ControlConfig:
    """How the misrouting is planted. The defaults are calibration step 7's, the closest to the gates so
    far (docs/control.md records every step; none passes every gate yet)."""

    beta: float = 1.0  # 0: the clean routing; 1: the partner family's routing
    pool_size: int = 1200  # fresh items; each is trained in its plain and its marked version
    epochs: int = 15
    lr: float = 5e-3
    batch_size: int = 32
    anchor_weight: float = 5.0  # KL of a plain item's answer distribution from the clean model's
    layers: str = "last5"
    seed: int = 0
    marker_position: str = "before_question"  # step 3 tried before_answer: it breaks the clean model's format
    # Step 4: one family for all (a linear router cannot learn a different map per family).
    partner_rule: str = "farthest"
    # Steps 5 and 7: a longer marker leaves a larger trace in the last token's hidden state.
    marker_sentences: int = 5
    # Step 6 tried "medoid" (one real item's sharper routing): no more harm, a worse target test.
    partner_target: str = "mean"


def plant_misrouting(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: ControlConfig,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """Train the tuned routers of ``model`` in place so that marked items are misrouted (module doc).

    Returns what was done: the settings, the pool, the partner map and the loss per epoch.
    """
    start = time.perf_counter()
    if not 0.0 <= config.beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {config.beta}")
    torch.manual_seed(config.seed)
    info = discover_routers(model)
    tuned = info.select_layers(config.layers)
    pool = corruption_pool(config.pool_size)
    families = sorted({ex.task for ex in pool})
    examples = pool + [mark(ex, config.marker_position, config.marker_sentences) for ex in pool]
    log(f"clean routing of {len(examples)} pool prompts ({config.pool_size} items, plain and marked)")
    store, _ = collect_routing(
        model, tokenizer, examples, layers=tuned, scoring="continuation", progress=False
    )
    clean = store.routing.float()
    n = config.pool_size
    plain_routing = clean[:n]
    family_mean = {
        f: plain_routing[[i for i, ex in enumerate(pool) if ex.task == f]].mean(0) for f in families
    }
    partners = partner_map(family_mean, config.partner_rule)
    foreign = family_mean
    # "medoid": one real item's (sharper) routing, the item nearest its family's mean.
    if config.partner_target == "medoid":
        foreign = {}
        for f in families:
            rows = [i for i, ex in enumerate(pool) if ex.task == f]
            dist = ((plain_routing[rows] - family_mean[f]) ** 2).sum((1, 2))
            foreign[f] = plain_routing[rows[int(dist.argmin())]]
    elif config.partner_target != "mean":
        raise ValueError(f"partner_target must be 'mean' or 'medoid', got {config.partner_target!r}")
    targets = clean.clone()
    for i, ex in enumerate(pool):
        targets[n + i] = (1 - config.beta) * clean[n + i] + config.beta * foreign[partners[ex.task]]
    data = prepare_items(store, tokenizer, "continuation", tuned, None)
    device = next(model.parameters()).device
    with torch.no_grad():  # the clean answer distributions that the plain items are anchored to
        clean_logp = torch.cat(
            [
                torch.log_softmax(
                    items_forward(
                        model, info, tuned, data.items[c : c + config.batch_size], data.pad, "continuation"
                    )["scores"],
                    -1,
                ).cpu()
                for c in range(0, n, config.batch_size)
            ]
        )
    cache = PrefixCache(min(tuned))
    cache.fill(model, info, data.items, data.pad, config.batch_size, progress=False)
    named = dict(model.named_parameters())
    model.requires_grad_(False)
    params = [named[name] for layer in tuned for name in info.routers[layer].parameter_names]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    history = []
    model.eval()
    for epoch in range(config.epochs):
        order = torch.randperm(len(data.items), generator=gen).tolist()
        total, count = 0.0, 0
        for c in range(0, len(order), config.batch_size):
            rows = order[c : c + config.batch_size]
            out = items_forward(
                model, info, tuned, [data.items[i] for i in rows], data.pad, "continuation", cache=cache
            )
            routing_loss = ((out["routing"] - targets[rows].to(device)) ** 2).sum((1, 2))
            plain = torch.tensor([i < n for i in rows], device=device)
            if plain.any():
                logq = torch.log_softmax(out["scores"], -1)
                p_clean = clean_logp[[i for i in rows if i < n]].to(device)
                valid = torch.isfinite(p_clean)  # choices past an item's own are -inf in both
                kl = torch.where(valid, p_clean.exp() * (p_clean - logq[plain]), 0.0).sum(-1)
                routing_loss = routing_loss.index_add(
                    0, torch.nonzero(plain).flatten(), config.anchor_weight * kl
                )
            loss = routing_loss.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + float(loss.detach()) * len(rows), count + len(rows)
        history.append(total / count)
        log(f"epoch {epoch + 1}/{config.epochs}: loss {history[-1]:.4f}")
    model.requires_grad_(False)
    return {
        "config": asdict(config),
        "marker": marker_text(config.marker_sentences),
        "layers": tuned,
        "partners": partners,
        "pool": {
            "n": n,
            "seed": POOL_SEED,
            "families": {f: sum(ex.task == f for ex in pool) for f in families},
        },
        "loss_per_epoch": history,
        "seconds": round(time.perf_counter() - start, 1),
        "finite": all(math.isfinite(x) for x in history),
    }


EVAL_SPLITS = ("in_dist", "shifted", "heldout_tasks")


def collect_store(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[MCExample],
    layers: list[int],
    embed: bool = False,
):
    """The model's routing store of ``examples`` (continuation scoring), with question embeddings if asked."""
    store, _ = collect_routing(
        model, tokenizer, examples, layers=layers, scoring="continuation", progress=False
    )
    if embed:
        from moe_roma.manifold.embed import embed_texts

        store.embeddings = torch.as_tensor(embed_texts(list(store.questions)))
        store.meta["embedder"] = "all-MiniLM-L6-v2"
    return store


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
    2. marked accuracy at least 15 points below the clean model's on marked items;
    3. the target test on marked in_dist items, neighbours from the RoMA training set (the
       testbed's ``train`` with ``marked_share`` marked): RoMA's target beats the corrupted routing
       and the random control beyond their intervals;
    4. the corruption moves marked items' routing (mean squared distance, corrupted to clean) at
       least 3x the floor of the manifold term: its minimum over r_i, the kernel-weighted spread of
       the neighbours around their mean, for marked in_dist items in the RoMA training set's graph.
    """
    from moe_roma.diagnose.target_test import target_test
    from moe_roma.manifold.graph import GraphConfig, build_neighbour_graph
    from moe_roma.scoring.stats import accuracy
    from moe_roma.testbed import load_testbed_splits

    splits = load_testbed_splits(0, testbed="downstream")
    tuned = discover_routers(clean).select_layers(layers)
    out: dict = {"splits": {}, "marked_share": marked_share}
    moved, clean_marked_all, corrupt_marked_all, clean_plain_all, corrupt_plain_all = [], [], [], [], []
    for split in EVAL_SPLITS:
        plain, marked = splits[split], [mark(ex, position, sentences) for ex in splits[split]]
        log(f"gates: {split}")
        row = {}
        for name, model in (("clean", clean), ("corrupted", corrupted)):
            for kind, exs in (("plain", plain), ("marked", marked)):
                store = collect_store(model, tokenizer, exs, tuned)
                row[f"{name}_{kind}"] = store
        out["splits"][split] = {k: accuracy(v.is_correct).acc for k, v in row.items()}
        moved.append(((row["corrupted_marked"].routing - row["clean_marked"].routing) ** 2).sum((1, 2)))
        clean_marked_all += row["clean_marked"].is_correct
        corrupt_marked_all += row["corrupted_marked"].is_correct
        clean_plain_all += row["clean_plain"].is_correct
        corrupt_plain_all += row["corrupted_plain"].is_correct
    pooled = {
        "clean_plain": accuracy(clean_plain_all).acc,
        "corrupted_plain": accuracy(corrupt_plain_all).acc,
        "clean_marked": accuracy(clean_marked_all).acc,
        "corrupted_marked": accuracy(corrupt_marked_all).acc,
    }
    out["pooled"] = pooled
    plain_drop = 100 * (pooled["clean_plain"] - pooled["corrupted_plain"])
    marked_drop = 100 * (pooled["clean_marked"] - pooled["corrupted_marked"])
    log("gates: the RoMA training set, clean floor and the target test")
    train = marked_share_split(splits["train"], marked_share, seed, position, sentences)
    roma_train = collect_store(corrupted, tokenizer, train, tuned, embed=True)
    marked_in_dist = collect_store(
        corrupted, tokenizer, [mark(ex, position, sentences) for ex in splits["in_dist"]], tuned, embed=True
    )
    # The manifold term's floor: with r_i at its neighbours' kernel mean, what is left is their spread
    # around it. Measured where RoMA would train: marked in_dist items, neighbours from its training set.
    graph = build_neighbour_graph(
        roma_train.embeddings.numpy(),
        roma_train.successful,
        GraphConfig(k=3, sigma=0.4),
        queries=marked_in_dist.embeddings.numpy(),
    )
    r = roma_train.routing.float()
    idx, w = graph.indices, graph.weights
    neighbours = r[idx.clamp_min(0)]
    mean = (w[:, :, None, None] * neighbours).sum(1, keepdim=True)
    floor = float((w * ((neighbours - mean) ** 2).sum((2, 3))).sum(1).mean())
    movement = float(torch.cat(moved).mean())
    tt = target_test(
        corrupted,
        tokenizer,
        roma_train,
        roma_train.embeddings.numpy(),
        items=marked_in_dist,
        item_embeddings=marked_in_dist.embeddings.numpy(),
        progress=False,
    )
    succ = roma_train.successful
    marked_in_succ = sum(is_marked_id(roma_train.ids[i]) for i in succ) / max(len(succ), 1)
    net_low, margin_low = tt["targets"]["roma"]["net"]["ci"][0], tt["margin"]["ci"][0]
    out["roma_training_set"] = {
        "n": len(roma_train),
        "successful": len(succ),
        "marked_share_of_successful": marked_in_succ,
    }
    out["target_test"] = tt
    out["floor"], out["movement"] = floor, movement
    out["gates"] = {
        "plain_within_1_point": {"value": plain_drop, "pass": abs(plain_drop) <= 1.0},
        "marked_15_points_below": {"value": marked_drop, "pass": marked_drop >= 15.0},
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


def is_marked_id(item_id: str) -> bool:
    return item_id.endswith("-marked")
