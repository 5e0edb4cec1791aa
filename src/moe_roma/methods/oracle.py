"""Oracle routing: how far routing changes alone could take the model (the paper's upper bound).

For each evaluation item we run gradient descent on its own last-prompt-token routing in the
tuned layers, using the item's TRUE label, and stop as soon as its answer is right:

- the variable is a per-item, per-layer vector of router-logit offsets ``delta`` (L, E), initialised
  to 0 (= the model's own routing) and applied through ``RoutingOverride`` inside ``items_forward``,
  so every family's own softmax/sigmoid, top-k and normalisation run unchanged;
- the objective is the item's task loss (cross-entropy over its answer scores, letter or
  continuation) with the gold answer;
- step 0 is the unmodified forward: items already right there count as right with 0 steps and are
  never changed (so the oracle can never turn a right item wrong); every other item gets up to
  ``steps`` optimiser updates and stops at the first forward whose argmax answer is right.

Items are batched: each has its own offsets, and the batch loss is the SUM of the per-item losses,
so each item's gradient (and Adam/SGD update, both element-wise) is exactly what it would get alone.

Input: a ``RoutingStore`` of the evaluation items, as written by ``collect_routing`` on them with
the same answer scoring (its ``input_texts`` are the prompts/contexts that ``build_items`` encodes).
Run ``collect_routing(model, tok, examples, layers, scoring)`` first; MCExamples are not accepted
directly so that the base pass and its summary stay in the caller's hands.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma.io.errors import RomaError
from moe_roma.models.discovery import MoEInfo, discover_routers
from moe_roma.models.inputs import pad_id
from moe_roma.routing.store import RoutingStore
from moe_roma.methods.common.batches import TrainItem, build_items, letter_ids_tensor
from moe_roma.methods.common.forward import items_forward
from moe_roma.methods.common.prefix import PrefixCache

TASK_LOSSES = ("letter", "continuation")


# --------------------------------------------------------------------------------------------------
# Shared by oracle routing and C3PO: cost accounting, model state, item preparation.


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
            "n_items": self.n_items, "forwards": self.forwards, "extra_forwards": self.extra_forwards,
            "backwards": self.backwards, "prefix_fills": self.prefix_fills,
            "full_forward_equivalents": round(self.full_equivalents, 4), "cost_vs_base": round(self.cost_vs_base, 4),
        }  # fmt: skip


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
    if chosen not in TASK_LOSSES:
        raise RomaError(f"task_loss must be one of {TASK_LOSSES}, got {chosen!r}")
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
    model: PreTrainedModel, info: MoEInfo, items: list[TrainItem], pad: int, layers: list[int], batch_size: int,
    counts: PassCount,
) -> PrefixCache | None:  # fmt: skip
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


# --------------------------------------------------------------------------------------------------


@dataclass
class OracleResult:
    """Per-item outcome of oracle routing, in the store's order."""

    ids: list[str]
    answers: list[int]
    predictions_before: list[int]
    predictions_after: list[int]
    correct_before: list[bool]
    correct_after: list[bool]
    steps_used: list[int]  # updates spent; ``steps`` for items never made right
    offsets: torch.Tensor  # (N, L, E) final router-logit offsets (0 for items right at step 0)
    layers: list[int]
    steps: int
    passes: PassCount
    store_disagreements: int  # items whose step-0 correctness differs from the store's is_correct
    seconds: float

    @property
    def accuracy(self) -> float:
        return sum(self.correct_after) / max(len(self.ids), 1)

    @property
    def base_accuracy(self) -> float:
        return sum(self.correct_before) / max(len(self.ids), 1)

    @property
    def gap(self) -> float:
        """Oracle minus base accuracy: the head-room of last-token routing changes."""
        return self.accuracy - self.base_accuracy

    @property
    def n_fixed(self) -> int:
        return sum(a and not b for a, b in zip(self.correct_after, self.correct_before))

    def line(self) -> str:
        return (
            f"oracle routing ({self.steps} steps, layers {self.layers}): base {self.base_accuracy:.1%} -> "
            f"oracle {self.accuracy:.1%} (gap {self.gap:+.1%}, {self.n_fixed} of "
            f"{len(self.ids) - sum(self.correct_before)} wrong items fixed), {self.seconds:.1f} s"
        )

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy, "base_accuracy": self.base_accuracy, "gap": self.gap, "n": len(self.ids),
            "n_fixed": self.n_fixed, "steps": self.steps, "layers": self.layers, "passes": self.passes.to_dict(),
            "store_disagreements": self.store_disagreements, "seconds": self.seconds,
            "items": [
                {"id": i, "answer": a, "before": pb, "after": pa, "steps_used": s}
                for i, a, pb, pa, s in zip(self.ids, self.answers, self.predictions_before, self.predictions_after, self.steps_used)
            ],
        }  # fmt: skip


def oracle_routing(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    eval_store: RoutingStore,
    layers: str | Sequence[int] | None = None,
    task_loss: str | None = None,
    steps: int = 20,
    lr: float = 0.5,
    optimizer: str = "adam",
    batch_size: int = 16,
    max_length: int | None = None,
    prefix_cache: bool = True,
    progress: bool = True,
    info: MoEInfo | None = None,
) -> OracleResult:
    """Per-item gradient descent on last-token router-logit offsets with the true label.

    ``layers``: tuned layers (default: the store's). ``task_loss``: ``letter`` or ``continuation``
    (default: the store's scoring). ``lr`` is in logit units per step (Adam: roughly the largest move
    of any offset per step). ``prefix_cache`` computes the frozen layers before the first tuned layer
    once per item (exact; only a speed-up).

    >>> store, _ = collect_routing(model, tok, examples, layers="last5", scoring="letter")  # doctest: +SKIP
    >>> oracle_routing(model, tok, store, steps=20).line()  # doctest: +SKIP
    """
    if steps < 0:
        raise RomaError(f"steps must be >= 0, got {steps}")
    if optimizer not in ("adam", "sgd"):
        raise RomaError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    start = time.perf_counter()
    info = info or discover_routers(model)
    eval_store.check_against(info)
    task_loss = resolve_task_loss(eval_store, task_loss)
    tuned = resolve_layers(info, eval_store, layers)
    data = prepare_items(eval_store, tokenizer, task_loss, tuned, max_length)
    n, n_layers, n_experts = len(data.items), len(tuned), info.num_experts
    device = next(model.parameters()).device
    counts = PassCount(n)
    frac = suffix_fraction(info, tuned) if prefix_cache and min(tuned) > 0 else 1.0
    before, after = [-1] * n, [-1] * n
    steps_used = [steps] * n
    final = torch.zeros(n, n_layers, n_experts)
    order = length_order(data.items)
    bar = tqdm(total=n, desc="oracle", unit="item", disable=not progress)
    with frozen_eval(model):
        for c in range(0, n, batch_size):
            chunk = order[c : c + batch_size]
            items = [data.items[i] for i in chunk]
            cache = (
                fill_cache(model, info, items, data.pad, tuned, batch_size, counts) if prefix_cache else None
            )
            offsets = torch.zeros(len(chunk), n_layers, n_experts, device=device, requires_grad=True)
            opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)([offsets], lr=lr)
            answers = data.answers[chunk].to(device)
            active = list(range(len(chunk)))  # positions in the chunk still wrong
            for step in range(steps + 1):
                rows = torch.tensor(active, device=device)
                # The last forward needs no graph; the others feed the next update.
                with torch.set_grad_enabled(step < steps):
                    out = items_forward(
                        model, info, tuned, [items[b] for b in active], data.pad, task_loss, data.letter_ids,
                        cache=cache, offsets={layer: offsets[rows, li] for li, layer in enumerate(tuned)},
                    )  # fmt: skip
                counts.add_forward(len(active), frac)
                pred = out["scores"].detach().argmax(-1)
                right = pred == answers[rows]
                still = []
                for r, b in enumerate(active):
                    i = chunk[b]
                    if step == 0:
                        before[i] = int(pred[r])
                    if bool(right[r]) or step == steps:
                        after[i] = int(pred[r])
                        steps_used[i] = step
                        final[i] = offsets[b].detach().cpu()
                    else:
                        still.append(r)
                if not still or step == steps:
                    break
                # Items already right are left out of the loss (their offsets are frozen in `final`).
                loss = out["task"][torch.tensor(still, device=device)].sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                counts.add_backward(len(active), frac)
                opt.step()
                active = [active[r] for r in still]
            bar.update(len(chunk))
    bar.close()
    answers_all = [it.answer for it in data.items]
    correct_before = [p == a for p, a in zip(before, answers_all)]
    correct_after = [p == a for p, a in zip(after, answers_all)]
    disagreements = sum(cb != bool(s) for cb, s in zip(correct_before, eval_store.is_correct))
    return OracleResult(
        ids=list(eval_store.ids), answers=answers_all, predictions_before=before, predictions_after=after,
        correct_before=correct_before, correct_after=correct_after, steps_used=steps_used, offsets=final,
        layers=tuned, steps=steps, passes=counts, store_disagreements=disagreements,
        seconds=time.perf_counter() - start,
    )  # fmt: skip
