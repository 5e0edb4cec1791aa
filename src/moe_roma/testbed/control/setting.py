"""The positive control's setting: the marker, the corruption pool, the marked share and the partner map.

Items that carry a marker before ``Question:`` are the ones the corruption misroutes (``plant``); the
sentence embedding sees the question only, so a marked item's neighbours in RoMA's graph are marked
and plain items of its own family alike (docs/control.md holds the design, gates and calibration).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

import torch

from moe_roma.data.example import MCExample
from moe_roma.data.prompts import continuation_context
from moe_roma.testbed.downstream import build_downstream_suite, content_keys, filler_sentence


# One in-vocabulary filler sentence (the corpus's own kind), the same for every marked item.
def marker_text(sentences: int = 1) -> str:
    """The marker: the first ``sentences`` filler sentences of a fixed stream, on one line."""
    rng = random.Random("roma-control:marker")
    return " ".join(filler_sentence(rng) for _ in range(sentences))


MARKER = marker_text(1)
# Fresh content for the corruption pool: this suite seed, minus every content key of the testbed's
# seed-0 splits.
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


def is_marked_id(item_id: str) -> bool:
    return item_id.endswith("-marked")
