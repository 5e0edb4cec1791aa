"""The oracle beside the target test: how far routing alone can move the answer, and in which direction.

``oracle_headroom`` runs oracle routing (``moe_roma.methods.oracle``) on a random sample, aimed at
the right answer, and again aimed at a *wrong* choice that the base model did not pick. If routing
changes reach a wrong answer about as often as the right one, the oracle's gap measures how easily
last-token routing steers the answer (steerability), not how badly the base routes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma.diagnose.measures import oracle_direction
from moe_roma.methods.oracle import OracleResult, oracle_routing
from moe_roma.routing.store import RoutingStore

# Reaching a wrong answer at least this share as often as the right one: the gap is mostly steerability.
STEERABILITY_RATIO = 0.75


def wrong_aims(store: RoutingStore, seed: int = 0) -> list[int | None]:
    """Per item, a random choice that is neither the right answer nor the base model's (None if none is)."""
    rng = np.random.default_rng(seed)
    out: list[int | None] = []
    for answer, picked, choices in zip(store.answer_index, store.model_answer, store.choices):
        n_choices = len(choices) if choices else max(answer, picked) + 1
        options = [c for c in range(n_choices) if c not in (answer, picked)]
        out.append(int(rng.choice(options)) if options else None)
    return out


def steering_words(right: float, wrong: float) -> str:
    """What the two reach rates mean, in one sentence."""
    if right <= 0:
        return "The oracle fixes no failed item here: last-token routing does not move the answer."
    ratio = wrong / right
    if ratio >= STEERABILITY_RATIO:
        return (
            f"Routing reaches an arbitrary wrong answer {ratio:.0%} as often as the right one: the oracle's "
            "gap measures how easily last-token routing steers the answer, not how badly the base routes."
        )
    return (
        f"Routing reaches an arbitrary wrong answer only {ratio:.0%} as often as the right one: part of the "
        "oracle's gap is routing that the right answer needs, beyond mere steerability."
    )


def oracle_headroom(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    store: RoutingStore,
    n: int,
    seed: int = 0,
    embeddings: np.ndarray | None = None,
    steps: int = 20,
    batch_size: int = 16,
    progress: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """Oracle routing on ``n`` random items towards the right answer and towards a wrong one, and (with
    ``embeddings``) the direction of the oracle's change against RoMA's pull."""
    n = min(n, len(store))
    pick = sorted(torch.randperm(len(store), generator=torch.Generator().manual_seed(seed))[:n].tolist())
    sample = store.subset(pick)
    log(f"oracle routing on {n} items, towards the right answer")
    result = oracle_routing(model, tokenizer, sample, steps=steps, batch_size=batch_size, progress=progress)
    out = {
        "n": n,
        "accuracy": result.accuracy,
        "base_accuracy": result.base_accuracy,
        "gap": result.gap,
        "layers": result.layers,
        "steps": steps,
    }
    steering = _steering(model, tokenizer, sample, result, seed, steps, batch_size, progress, log)
    if steering is not None:
        out["steering"] = steering
    if embeddings is not None:
        out["direction"] = _direction(store, pick, result, embeddings, seed)
    return out


def _steering(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sample: RoutingStore,
    result: OracleResult,
    seed: int,
    steps: int,
    batch_size: int,
    progress: bool,
    log: Callable[[str], None],
) -> dict | None:
    """How often the oracle reaches the right answer on failed items against how often it reaches a
    wrong choice the base did not pick (None when no item has such a choice)."""
    failed = [i for i, ok in enumerate(result.correct_before) if not ok]
    right_reach = sum(result.correct_after[i] for i in failed) / len(failed) if failed else 0.0
    aims = wrong_aims(sample, seed)
    rows = [i for i, a in enumerate(aims) if a is not None]
    if not rows:
        return None
    log(f"oracle routing on {len(rows)} items, towards a wrong choice the base did not pick")
    wrong = oracle_routing(
        model,
        tokenizer,
        sample.subset(rows),
        steps=steps,
        batch_size=batch_size,
        progress=progress,
        aim=[aims[i] for i in rows],
    )
    wrong_reach = wrong.accuracy  # no item starts at its aim: the reach rate over every aimed item
    return {
        "n_failed": len(failed),
        "right_reach": right_reach,
        "n_aimed": len(rows),
        "wrong_reach": wrong_reach,
        "right_headroom": result.gap,
        "wrong_share": wrong_reach,
        "words": steering_words(right_reach, wrong_reach),
    }


def _direction(
    store: RoutingStore, pick: list[int], result: OracleResult, embeddings: np.ndarray, seed: int
) -> dict:
    """The direction of the oracle's routing change on the items it fixed, against RoMA's pull."""
    # The oracle's routing for the sampled items, in the store's layer order, over the base routing.
    oracle = store.routing.float().clone()
    cols = [list(store.layers).index(x) for x in result.layers]
    oracle[torch.tensor(pick)[:, None], torch.tensor(cols)[None, :]] = result.routing.float()
    fixed = [
        i
        for i, before, after in zip(pick, result.correct_before, result.correct_after)
        if after and not before
    ]
    return oracle_direction(embeddings, store.routing.float(), oracle, store.is_correct, fixed, seed=seed)
