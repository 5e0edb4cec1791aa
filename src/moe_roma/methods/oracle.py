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
from moe_roma.methods.base import MethodSpec, TestTimeInputs, TestTimeOutcome, register
from moe_roma.methods.common.forward import items_forward
from moe_roma.methods.common.items import (
    ItemSet,
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
    run = _Oracle(
        model, info, tuned, data, steps, lr, optimizer, prefix_cache, next(model.parameters()).device
    )
    run.frac = suffix_fraction(info, tuned) if prefix_cache and min(tuned) > 0 else 1.0
    n = len(data.items)
    order = length_order(data.items)
    bar = tqdm(total=n, desc="oracle", unit="item", disable=not progress)
    with frozen_eval(model):
        for c in range(0, n, batch_size):
            _descend(run, order[c : c + batch_size], batch_size)
            bar.update(len(order[c : c + batch_size]))
    bar.close()
    return _result(run, eval_store, aim is not None, time.perf_counter() - start)


@dataclass
class _Oracle:
    """One ``oracle_routing`` call: what its batches share, and each item's outcome so far."""

    model: PreTrainedModel
    info: MoEInfo
    tuned: list[int]
    data: ItemSet
    steps: int
    lr: float
    optimizer: str
    prefix_cache: bool
    device: torch.device
    frac: float = 1.0  # the share of a full forward that a pass replaying the prefix costs
    counts: PassCount = field(init=False)
    before: list[int] = field(init=False)  # each item's answer with its own routing
    after: list[int] = field(init=False)  # ... with the oracle's
    steps_used: list[int] = field(init=False)
    final: torch.Tensor = field(init=False)  # (N, L, E) the offsets that answered, or the last ones
    final_routing: torch.Tensor = field(init=False)  # (N, L, E) the routing they gave

    def __post_init__(self) -> None:
        n, shape = len(self.data.items), (len(self.data.items), len(self.tuned), self.info.num_experts)
        self.counts = PassCount(n)
        self.before, self.after, self.steps_used = [-1] * n, [-1] * n, [self.steps] * n
        self.final, self.final_routing = torch.zeros(shape), torch.zeros(shape)


def _descend(run: _Oracle, chunk: list[int], batch_size: int) -> None:
    """Gradient descent on the offsets of a batch of items (``chunk``: their indices), each stopping
    at the first forward whose answer is right; step 0 is the unmodified forward."""
    data, tuned, device = run.data, run.tuned, run.device
    items = [data.items[i] for i in chunk]
    cache = (
        fill_cache(run.model, run.info, items, data.pad, tuned, batch_size, run.counts)
        if run.prefix_cache
        else None
    )
    offsets = torch.zeros(len(chunk), len(tuned), run.info.num_experts, device=device, requires_grad=True)
    opt = (torch.optim.Adam if run.optimizer == "adam" else torch.optim.SGD)([offsets], lr=run.lr)
    answers = data.answers[chunk].to(device)
    active = list(range(len(chunk)))  # positions in the chunk still wrong
    for step in range(run.steps + 1):
        rows = torch.tensor(active, device=device)
        # The last forward needs no graph; the others feed the next update.
        with torch.set_grad_enabled(step < run.steps):
            out = items_forward(
                run.model,
                run.info,
                tuned,
                [items[b] for b in active],
                data.pad,
                data.task_loss,
                data.letter_ids,
                cache=cache,
                offsets={layer: offsets[rows, li] for li, layer in enumerate(tuned)},
            )
        run.counts.add_forward(len(active), run.frac)
        still = _record(run, chunk, active, step, out, offsets, answers[rows])
        if not still or step == run.steps:
            break
        # Items already right are left out of the loss (their offsets are frozen in `final`).
        loss = out["task"][torch.tensor(still, device=device)].sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        run.counts.add_backward(len(active), run.frac)
        opt.step()
        active = [active[r] for r in still]


def _record(
    run: _Oracle,
    chunk: list[int],
    active: list[int],
    step: int,
    out: dict[str, torch.Tensor],
    offsets: torch.Tensor,
    answers: torch.Tensor,
) -> list[int]:
    """Each active item's answer at this step: the first one is its answer before; a right one (or the
    last step's) is final, with its offsets and routing. Returns the rows that are still wrong."""
    pred = out["scores"].detach().argmax(-1)
    right = pred == answers
    still = []
    for r, b in enumerate(active):
        i = chunk[b]
        if step == 0:
            run.before[i] = int(pred[r])
        if bool(right[r]) or step == run.steps:
            run.after[i] = int(pred[r])
            run.steps_used[i] = step
            run.final[i] = offsets[b].detach().cpu()
            run.final_routing[i] = out["routing"][r].detach().float().cpu()
        else:
            still.append(r)
    return still


def _result(run: _Oracle, eval_store: RoutingStore, aimed: bool, seconds: float) -> OracleResult:
    answers_all = [it.answer for it in run.data.items]
    correct_before = [p == a for p, a in zip(run.before, answers_all)]
    correct_after = [p == a for p, a in zip(run.after, answers_all)]
    # Aimed elsewhere, "correct" is about the aim, not the store's answers: nothing to compare.
    disagreements = 0 if aimed else sum(cb != bool(s) for cb, s in zip(correct_before, eval_store.is_correct))
    return OracleResult(
        ids=list(eval_store.ids),
        answers=answers_all,
        predictions_before=run.before,
        predictions_after=run.after,
        correct_before=correct_before,
        correct_after=correct_after,
        steps_used=run.steps_used,
        offsets=run.final,
        routing=run.final_routing,
        layers=run.tuned,
        steps=run.steps,
        passes=run.counts,
        store_disagreements=disagreements,
        seconds=seconds,
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


def run_oracle(inputs: TestTimeInputs, config: OracleConfig) -> TestTimeOutcome:
    """The registered entry point: oracle routing on one evaluation split."""
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


register(
    MethodSpec(
        "oracle",
        "test_time",
        OracleConfig,
        run_oracle,
        "per-item gradient descent on routing with the true label (upper bound)",
    )
)
