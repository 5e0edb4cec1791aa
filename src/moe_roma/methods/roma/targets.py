"""Target routing for the manifold term: the base model's, or the oracle's where the base is wrong.

The paper's targets are the base routing of the training items the base model answers right (the
successful set S). With ``targets: oracle`` (an extension, docs/method.md), every training item
the base model gets wrong is handed to oracle routing (gradient descent on its own last-token
routing with its own *training* label); where that finds a routing that answers right, the item
joins S with that routing as its target. S then holds the base routing where the base was right
and the oracle's where it was wrong. Evaluation labels are never used.
"""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma.methods.oracle import oracle_routing
from moe_roma.models.discovery import MoEInfo
from moe_roma.routing.store import RoutingStore

ORACLE_TARGETS = "oracle"


def with_oracle_targets(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    store: RoutingStore,
    layers: list[int],
    info: MoEInfo,
    steps: int = 20,
    batch_size: int = 16,
    max_length: int | None = None,
    progress: bool = False,
) -> RoutingStore:
    """A copy of ``store`` whose wrong items carry the oracle's routing in ``layers`` and count as
    successful where the oracle made them right. Idempotent: a store already marked is returned as is.

    ``meta["targets"]`` records ``"oracle"``, ``meta["oracle_fixed"]`` the ids the oracle fixed and
    ``meta["base_correct"]`` the base model's own correctness, which the copy's ``is_correct`` no
    longer shows.
    """
    if store.meta.get("targets") == ORACLE_TARGETS:
        return store
    out = store.subset(list(range(len(store))))
    out.meta.update(
        {"targets": ORACLE_TARGETS, "base_correct": list(store.is_correct), "oracle_steps": steps}
    )
    wrong = [i for i, ok in enumerate(store.is_correct) if not ok]
    fixed: list[str] = []
    if wrong:
        result = oracle_routing(
            model,
            tokenizer,
            store.subset(wrong),
            layers=layers,
            steps=steps,
            batch_size=batch_size,
            max_length=max_length,
            progress=progress,
            info=info,
        )
        columns = [store.layers.index(layer) for layer in layers]
        for j, i in enumerate(wrong):
            if result.correct_after[j]:
                out.routing[i, columns] = result.routing[j].to(out.routing.dtype)
                out.is_correct[i] = True
                fixed.append(store.ids[i])
    out.meta["oracle_fixed"] = fixed
    return out
