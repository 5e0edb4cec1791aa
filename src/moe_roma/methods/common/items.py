"""What the test-time methods (oracle routing, C3PO) share: their items, cost accounting and model state.

Each item of a routing store is encoded as ``items_forward`` expects (``ItemSet``); ``PassCount``
counts the forward and backward passes actually run, in units of one full forward of the base
model; ``frozen_eval`` keeps the caller's model unchanged while offsets or targets are optimised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma.io.errors import RomaError
from moe_roma.methods.common.batches import TrainItem, build_items, letter_ids_tensor
from moe_roma.methods.common.prefix import PrefixCache
from moe_roma.models.discovery import MoEInfo
from moe_roma.models.inputs import pad_id
from moe_roma.routing.store import RoutingStore
from moe_roma.scoring import SCORINGS


@dataclass
class PassCount:
    """Model passes spent, counted per item, and their cost in full-forward equivalents.

    One *forward* is one pass over one item (all of its choice rows for continuation scoring), the
    unit in which the base model spends exactly one pass per item. A *backward* costs about two
    forwards. With the prefix cache, a forward/backward runs only the tuned suffix of the decoder
    (``suffix_fraction`` of its layers) and the cache fill runs the frozen prefix once per item.
    """

    n_items: int
    forwards: int = 0
    backwards: int = 0
    prefix_fills: int = 0
    full_equivalents: float = 0.0

    def add_forward(self, n: int, fraction: float = 1.0) -> None:
        self.forwards += n
        self.full_equivalents += n * fraction

    def add_backward(self, n: int, fraction: float = 1.0) -> None:
        self.backwards += n
        self.full_equivalents += 2 * n * fraction

    def add_prefix(self, n: int, fraction: float) -> None:
        self.prefix_fills += n
        self.full_equivalents += n * fraction

    @property
    def extra_forwards(self) -> int:
        """Forward passes beyond the base model's one per item."""
        return self.forwards - self.n_items

    @property
    def cost_vs_base(self) -> float:
        """Total compute as a multiple of the base model's (one full forward per item)."""
        return self.full_equivalents / max(self.n_items, 1)

    def to_dict(self) -> dict:
        return {
            "n_items": self.n_items,
            "forwards": self.forwards,
            "extra_forwards": self.extra_forwards,
            "backwards": self.backwards,
            "prefix_fills": self.prefix_fills,
            "full_forward_equivalents": round(self.full_equivalents, 4),
            "cost_vs_base": round(self.cost_vs_base, 4),
        }


@contextlib.contextmanager
def frozen_eval(model: PreTrainedModel) -> Iterator[None]:
    """Eval mode and no parameter gradients for the block: only offsets/targets are optimised, and
    the caller's model comes back with its training flag and ``requires_grad`` flags unchanged."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


@dataclass
class ItemSet:
    """Everything ``items_forward`` needs for the items of one routing store."""

    store: RoutingStore
    items: list[TrainItem]
    task_loss: str
    letter_ids: torch.Tensor | None
    pad: int
    columns: list[int] = field(default_factory=list)  # store layer columns of the tuned layers

    @property
    def answers(self) -> torch.Tensor:
        return torch.tensor([it.answer for it in self.items])


def resolve_task_loss(store: RoutingStore, task_loss: str | None) -> str:
    """The answer scoring to use: the store's own unless given; a mismatch would score other texts."""
    recorded = store.meta.get("answer_scoring")
    chosen = task_loss or recorded or "letter"
    if chosen not in SCORINGS:
        raise RomaError(f"task_loss must be one of {SCORINGS}, got {chosen!r}")
    if recorded and recorded != chosen:
        raise RomaError(
            f"the routing store was collected with {recorded!r} scoring (its texts are {recorded} prompts); "
            f"collect it again with scoring={chosen!r} to use the {chosen} loss"
        )
    return chosen


def resolve_layers(info: MoEInfo, store: RoutingStore, layers: str | Sequence[int] | None) -> list[int]:
    """Tuned layers (default: the store's); they must be MoE layers recorded in the store."""
    chosen = (
        list(store.layers)
        if layers is None
        else info.select_layers(layers if isinstance(layers, str) else list(layers))
    )
    missing = [layer for layer in chosen if layer not in store.layers]
    if missing:
        raise RomaError(f"layers {missing} are not recorded in the routing store (it has {store.layers})")
    return chosen


def prepare_items(
    store: RoutingStore,
    tokenizer: PreTrainedTokenizerBase,
    task_loss: str,
    layers: list[int],
    max_length: int | None,
    max_choices: int | None = None,
) -> ItemSet:
    """Build the store's items (letter prompts or context+choice sequences) and the letter ids."""
    length = max_length or store.meta.get("max_length") or 1024
    items = build_items(store, tokenizer, task_loss, int(length))
    n_letters = max_choices or max(it.n_choices for it in items)
    letters = letter_ids_tensor(tokenizer, n_letters) if task_loss == "letter" else None
    return ItemSet(
        store, items, task_loss, letters, pad_id(tokenizer), [store.layers.index(x) for x in layers]
    )


def suffix_fraction(info: MoEInfo, layers: list[int]) -> float:
    """Share of decoder layers a prefix-cached pass still runs (the tuned layers and after)."""
    return (info.num_layers - min(layers)) / max(info.num_layers, 1)


def fill_cache(
    model: PreTrainedModel,
    info: MoEInfo,
    items: list[TrainItem],
    pad: int,
    layers: list[int],
    batch_size: int,
    counts: PassCount,
) -> PrefixCache | None:
    """Prefix states of ``items`` entering the first tuned layer (None when there is no prefix)."""
    first = min(layers)
    if first == 0:
        return None
    cache = PrefixCache(first)
    cache.fill(model, info, items, pad, batch_size, progress=False)
    counts.add_prefix(len(items), 1.0 - suffix_fraction(info, layers))
    return cache


def length_order(items: list[TrainItem]) -> list[int]:
    """Longest first, so that a batch holds similar lengths and little padding is computed."""
    return sorted(range(len(items)), key=lambda i: -sum(len(s) for s in items[i].seqs))
