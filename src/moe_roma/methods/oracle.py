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

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma.io.config import Config
from moe_roma.io.errors import RomaError
from moe_roma.methods.common.forward import items_forward
from moe_roma.methods.common.items import (
    PassCount,
    fill_cache,
    frozen_eval,
    length_order,
    prepare_items,
    resolve_layers,
    resolve_task_loss,
    suffix_fraction,
)
from moe_roma.models.discovery import MoEInfo, discover_routers
from moe_roma.routing.store import RoutingStore


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
    routing: torch.Tensor  # (N, L, E) routing weights at the last prompt token in the final forward
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
            "accuracy": self.accuracy,
            "base_accuracy": self.base_accuracy,
            "gap": self.gap,
            "n": len(self.ids),
            "n_fixed": self.n_fixed,
            "steps": self.steps,
            "layers": self.layers,
            "passes": self.passes.to_dict(),
            "store_disagreements": self.store_disagreements,
            "seconds": self.seconds,
            "items": [
                {"id": i, "answer": a, "before": pb, "after": pa, "steps_used": s}
                for i, a, pb, pa, s in zip(
                    self.ids, self.answers, self.predictions_before, self.predictions_after, self.steps_used
                )
            ],
        }


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
    aim: Sequence[int] | None = None,
) -> OracleResult:
    """Per-item gradient descent on last-token router-logit offsets with the true label.

    ``layers``: tuned layers (default: the store's). ``task_loss``: ``letter`` or ``continuation``
    (default: the store's scoring). ``lr`` is in logit units per step (Adam: roughly the largest move
    of any offset per step). ``prefix_cache`` computes the frozen layers before the first tuned layer
    once per item (exact; only a speed-up). ``aim``: steer item i towards choice ``aim[i]`` instead of
    its true answer (a steerability probe: aimed at a wrong choice, "correct" in the result means
    the aimed choice was reached).

    >>> store, _ = collect_routing(model, tok, examples, layers="last5", scoring="letter")  # doctest: +SKIP
    >>> oracle_routing(model, tok, store, steps=20).line()  # doctest: +SKIP
    """
    if steps < 0:
        raise RomaError(f"steps must be >= 0, got {steps}")
    if optimizer not in ("adam", "sgd"):
        raise RomaError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    start = time.perf_counter()
    info = info or discover_routers(model)
    eval_store.fit_to_model(info)
    task_loss = resolve_task_loss(eval_store, task_loss)
    tuned = resolve_layers(info, eval_store, layers)
    data = prepare_items(eval_store, tokenizer, task_loss, tuned, max_length)
    if aim is not None:
        if len(aim) != len(data.items) or any(not 0 <= a < it.n_choices for a, it in zip(aim, data.items)):
            raise RomaError("aim needs one choice index per item, within that item's choices")
        data.items = [replace(it, answer=int(a)) for it, a in zip(data.items, aim)]
    n, n_layers, n_experts = len(data.items), len(tuned), info.num_experts
    device = next(model.parameters()).device
    counts = PassCount(n)
    frac = suffix_fraction(info, tuned) if prefix_cache and min(tuned) > 0 else 1.0
    before, after = [-1] * n, [-1] * n
    steps_used = [steps] * n
    final = torch.zeros(n, n_layers, n_experts)
    final_routing = torch.zeros(n, n_layers, n_experts)
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
                        model,
                        info,
                        tuned,
                        [items[b] for b in active],
                        data.pad,
                        task_loss,
                        data.letter_ids,
                        cache=cache,
                        offsets={layer: offsets[rows, li] for li, layer in enumerate(tuned)},
                    )
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
                        final_routing[i] = out["routing"][r].detach().float().cpu()
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
    # Aimed elsewhere, "correct" is about the aim, not the store's answers: nothing to compare.
    disagreements = (
        0 if aim is not None else sum(cb != bool(s) for cb, s in zip(correct_before, eval_store.is_correct))
    )
    return OracleResult(
        ids=list(eval_store.ids),
        answers=answers_all,
        predictions_before=before,
        predictions_after=after,
        correct_before=correct_before,
        correct_after=correct_after,
        steps_used=steps_used,
        offsets=final,
        routing=final_routing,
        layers=tuned,
        steps=steps,
        passes=counts,
        store_disagreements=disagreements,
        seconds=time.perf_counter() - start,
    )


@dataclass
class OracleConfig(Config):
    """Settings of oracle routing (``roma experiment`` method kind ``oracle``)."""

    steps: int = field(default=20, metadata={"help": "gradient steps per item at most", "range": (0, None)})
    lr: float = field(default=0.5, metadata={"help": "step size in router-logit units", "range": (0, None)})
    optimizer: Literal["adam", "sgd"] = field(default="adam", metadata={"help": "`adam` or `sgd`"})
    max_length: int | None = field(
        default=None, metadata={"help": "longest prompt in tokens", "range": (1, None)}
    )
    prefix_cache: bool = field(default=True, metadata={"help": "compute the frozen layers once per item"})


def run_oracle(inputs, config: OracleConfig):
    """The registry's entry point: oracle routing on one evaluation split (``TestTimeInputs``)."""
    from moe_roma.methods.base import TestTimeOutcome

    res = oracle_routing(
        inputs.model,
        inputs.tokenizer,
        inputs.eval_store,
        layers=inputs.layers,
        steps=config.steps,
        lr=config.lr,
        optimizer=config.optimizer,
        batch_size=inputs.batch_size,
        max_length=config.max_length,
        prefix_cache=config.prefix_cache,
        progress=inputs.progress,
        info=inputs.info,
    )
    return TestTimeOutcome(
        res.correct_after,
        {"base_accuracy": res.base_accuracy, "gap": res.gap, "cost_vs_base": res.passes.cost_vs_base},
    )
