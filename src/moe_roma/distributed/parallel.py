"""Data-parallel collection and evaluation: each rank takes a contiguous block of the items, then rank 0
reassembles them in the original order, so the file written is the one a single process would write.

Each rank holds a whole model here (``--shard none``). Only the bytes move between ranks, as JSON
and tensors through ``all_gather``: nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma.data.example import MCExample
from moe_roma.distributed.group import block, gather_json, gather_rows, world
from moe_roma.io.errors import JobError
from moe_roma.routing.collect import CollectSummary, collect_routing
from moe_roma.routing.store import RoutingStore
from moe_roma.scoring.engine import evaluate
from moe_roma.scoring.results import EvalResult, ItemResult, Unusable

# The per-item fields of a routing store, gathered as JSON; routing is gathered as a tensor.
_STORE_LISTS = (
    "ids",
    "input_texts",
    "answer_index",
    "model_answer",
    "is_correct",
    "token_ids",
    "token_texts",
    "questions",
    "choices",
    "tasks",
    "continuations",
)


def my_share(examples: Sequence[MCExample], what: str) -> list[MCExample]:
    """This rank's contiguous block of ``examples``; refuses a job with more processes than items."""
    rank, size = world()
    if len(examples) < size:
        raise JobError(
            f"{len(examples)} {what} cannot be split across the {size} processes of this torchrun job; "
            f"use at most {len(examples)} processes"
        )
    return [examples[i] for i in block(len(examples), rank, size)]


def collect_routing_parallel(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[MCExample], **kwargs
) -> tuple[RoutingStore, CollectSummary]:
    """``routing.collect.collect_routing`` over the joined group's ranks; the same call on one process."""
    _, size = world()
    if size == 1:
        return collect_routing(model, tokenizer, examples, **kwargs)
    store, summary = collect_routing(model, tokenizer, my_share(examples, "examples"), **kwargs)
    parts = gather_json(
        {
            "lists": {f: getattr(store, f) for f in _STORE_LISTS},
            "seconds": summary.seconds,
            "truncated": summary.truncated,
        }
    )
    routing = torch.cat(gather_rows(store.routing.float().contiguous()))
    lists = {f: [x for part in parts for x in part["lists"][f]] for f in _STORE_LISTS}
    lists["choices"] = [tuple(c) if c is not None else None for c in lists["choices"]]
    merged = RoutingStore(layers=store.layers, routing=routing, meta=store.meta, **lists)
    correct = merged.is_correct
    summary = CollectSummary(
        len(correct),
        sum(correct) / max(len(correct), 1),
        max(p["seconds"] for p in parts),
        sum(p["truncated"] for p in parts),
    )
    return merged, summary


def evaluate_parallel(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[MCExample], **kwargs
) -> EvalResult:
    """``scoring.engine.evaluate`` over the ranks of the joined group; the same call on one process."""
    _, size = world()
    if size == 1:
        return evaluate(model, tokenizer, examples, **kwargs)
    result = evaluate(model, tokenizer, my_share(examples, "examples"), **kwargs)
    items = [
        {f.name: getattr(it, f.name) for f in dataclasses.fields(it) if f.name != "routing"}
        for it in result.items
    ]
    parts = gather_json(
        {
            "items": items,
            "unusable": [dataclasses.asdict(u) for u in result.unusable],
            "seconds": result.seconds,
        }
    )
    merged = [ItemResult(**{**it, "scores": tuple(it["scores"])}) for p in parts for it in p["items"]]
    unusable = [Unusable(**u) for p in parts for u in p["unusable"]]
    return EvalResult(result.scoring, merged, unusable, max(p["seconds"] for p in parts))
