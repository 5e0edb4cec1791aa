"""Score multiple-choice examples with a causal LM: answer letters or choice log-likelihoods.

Two scorings, both batched:

* ``letter``: the prompt lists the lettered choices and ends with ``Answer:``; the prediction is
  the letter whose next token (`` A``, `` B``, ...) is most likely at the last prompt position.
  One forward pass per question, computing logits at that position only.
* ``continuation``: lm-evaluation-harness's ``multiple_choice``. Each choice is scored as the
  summed log-likelihood of ``" " + choice`` after the context; ``acc`` takes the argmax of that
  sum and ``acc_norm`` the argmax of the sum divided by the choice's length in characters.
  Partial scoring (WinoGrande, ``example.continuation`` set) scores the fixed continuation after
  each context option instead.

The continuation engine (``loglikelihoods``) reproduces lm-evaluation-harness's HFLM request
by request: the same tokenisation split, the same left truncation, right padding, no attention
mask, sorted by length. That is what makes ``acc`` and ``acc_norm`` agree with it exactly.

>>> from moe_roma.scoring.engine import continuation_requests
>>> from moe_roma.data.example import MCExample
>>> continuation_requests(MCExample("1", "2 + 2 = ?", ("3", "4"), 1))
[('Question: 2 + 2 = ?\\nAnswer:', ' 3'), ('Question: 2 + 2 = ?\\nAnswer:', ' 4')]
"""

from __future__ import annotations

import math
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma.data.example import MCExample
from moe_roma.data.prompts import (
    DEFAULT_LETTER_TEMPLATE,
    continuation_context,
    letter_prompt,
)
from moe_roma.io.errors import RomaError
from moe_roma.scoring.stats import accuracy
from moe_roma.models.forward import last_token_forward
from moe_roma.models.inputs import encode_pair, encode_text, left_pad, letter_token_ids, pad_id

SCORINGS = ("letter", "continuation")
# lm-evaluation-harness puts this between the context and each choice.
TARGET_DELIMITER = " "
# lm-evaluation-harness's fallback when neither the config nor the tokenizer states a length.
DEFAULT_MAX_LENGTH = 2048
_TOKENIZER_INFINITY = 1_000_000_000_000  # tokenizers without a limit report a huge number


@dataclass
class ItemResult:
    """How one example was scored.

    ``scores`` holds one number per choice: the answer letter's log-probability (letter scoring)
    or the summed log-likelihood of the choice (continuation). ``pred`` is their argmax;
    ``pred_norm`` (continuation only) the argmax after dividing by each choice's length.
    """

    id: str
    task: str
    answer: int
    scores: tuple[float, ...]
    pred: int  # -1 when the item could not be scored
    pred_norm: int | None = None
    truncated: bool = False  # the input was cut from the left to fit max_length
    scored: bool = True  # False: listed as unusable and left out of every figure
    routing: torch.Tensor | None = field(default=None, repr=False)  # (L, E), letter scoring with capture

    @property
    def correct(self) -> bool:
        return self.pred == self.answer

    @property
    def correct_norm(self) -> bool | None:
        return None if self.pred_norm is None else self.pred_norm == self.answer

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "task": self.task,
            "answer": self.answer,
            "pred": self.pred,
            "correct": self.correct,
            "scores": [_finite(s) for s in self.scores],
        }
        if self.pred_norm is not None:
            out["pred_norm"] = self.pred_norm
            out["correct_norm"] = self.correct_norm
        if self.truncated:
            out["truncated"] = True
        if not self.scored:
            out["scored"] = False
        return out


def _finite(x: float) -> float | None:
    # JSON has no -inf; a choice the model gives zero probability is written as null.
    return round(x, 6) if math.isfinite(x) else None


@dataclass
class Scores:
    """What a scorer returns: one ``ItemResult`` per example, in the examples' order, and the unusable ones."""

    items: list[ItemResult]
    unusable: list[Unusable]

    @property
    def predictions(self) -> list[int]:
        """Predicted choice index per example (-1 where the example could not be scored)."""
        return [it.pred for it in self.items]


@dataclass(frozen=True)
class Unusable:
    """An example that could not be scored as intended, and why.

    ``scored`` says whether it still counts in the accuracy (a truncated prompt does; a
    continuation longer than the model's context does not).
    """

    id: str
    task: str
    reason: str
    scored: bool

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "task": self.task, "reason": self.reason, "scored": self.scored}


@dataclass
class EvalResult:
    """Per-item results of one evaluation run, with overall and per-task figures."""

    scoring: str
    items: list[ItemResult]  # one per example given, in order; figures use the scored ones
    unusable: list[Unusable]
    seconds: float = 0.0

    @property
    def scored_items(self) -> list[ItemResult]:
        return [it for it in self.items if it.scored]

    @property
    def n_examples(self) -> int:
        return len(self.items)

    @property
    def n(self) -> int:
        """Items that count in the figures (truncated ones included)."""
        return len(self.scored_items)

    @property
    def acc(self) -> float | None:
        return accuracy([it.correct for it in self.scored_items]).acc

    @property
    def acc_norm(self) -> float | None:
        if self.scoring != "continuation":
            return None
        return accuracy([bool(it.correct_norm) for it in self.scored_items]).acc

    @property
    def examples_per_s(self) -> float | None:
        return self.n_examples / self.seconds if self.seconds > 0 else None

    def by_task(self) -> dict[str, list[ItemResult]]:
        """Scored items grouped by task, tasks in name order."""
        groups: dict[str, list[ItemResult]] = defaultdict(list)
        for it in self.scored_items:
            groups[it.task].append(it)
        return dict(sorted(groups.items()))

    def _figures(self, items: Sequence[ItemResult]) -> dict[str, Any]:
        acc = accuracy([it.correct for it in items])
        out: dict[str, Any] = {"n": acc.n, "acc": acc.acc, "acc_ci": list(acc.ci) if acc.ci else None}
        if self.scoring == "continuation":
            norm = accuracy([bool(it.correct_norm) for it in items])
            out["acc_norm"] = norm.acc
            out["acc_norm_ci"] = list(norm.ci) if norm.ci else None
        return out

    def summary(self) -> dict[str, Any]:
        """The JSON-ready figures: n, acc (+ 95% Wilson interval), acc_norm, per task, unusable, timing."""
        out = {"scoring": self.scoring, "n_examples": self.n_examples, **self._figures(self.scored_items)}
        out["tasks"] = {name: self._figures(items) for name, items in self.by_task().items()}
        out["n_unusable"] = len(self.unusable)
        out["unusable"] = [u.to_dict() for u in self.unusable]
        out["seconds"] = round(self.seconds, 3)
        eps = self.examples_per_s
        out["examples_per_s"] = None if eps is None else round(eps, 3)
        return out

    def line(self, label: str = "") -> str:
        """One printable summary line, e.g. ``acc 0.512 [0.483, 0.541]  acc_norm 0.530  n=1172 ...``."""
        acc = accuracy([it.correct for it in self.scored_items])
        parts = [f"{label}: " if label else ""]
        parts.append(f"acc {_fmt(acc.acc)} {_fmt_ci(acc.ci)}")
        if self.scoring == "continuation":
            parts.append(f"  acc_norm {_fmt(self.acc_norm)}")
        parts.append(f"  n={self.n}")
        if self.unusable:
            parts.append(f" ({len(self.unusable)} unusable)")
        eps = self.examples_per_s
        parts.append(f"  {self.seconds:.1f} s, {eps:.1f} examples/s" if eps is not None else "")
        return "".join(parts)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _fmt_ci(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f"[{ci[0]:.4f}, {ci[1]:.4f}]"


# --- shared helpers -----------------------------------------------------------------------


def context_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None) -> int:
    """The model's context length, found as lm-evaluation-harness finds it (so truncation agrees).

    The config's ``n_positions``, ``max_position_embeddings`` or ``n_ctx`` (a nested
    ``text_config`` first), else the tokenizer's ``model_max_length``, else 2048.
    """
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if value is not None:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit < _TOKENIZER_INFINITY:
        return int(limit)
    return DEFAULT_MAX_LENGTH


def _device(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise RomaError(f"batch size must be at least 1, got {batch_size}")


def _argmax(values: Sequence[float]) -> int:
    # First maximum, like numpy.argmax in lm-evaluation-harness (ties go to the earlier choice).
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def _in_order(unusable: list[Unusable], examples: Sequence[MCExample]) -> list[Unusable]:
    # Batches run longest first; report in the data's order.
    rank = {ex.id: i for i, ex in enumerate(examples)}
    return sorted(unusable, key=lambda u: rank.get(u.id, len(rank)))


def _progress(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr, leave=False, dynamic_ncols=True)


# --- letter scoring -----------------------------------------------------------------------


def score_letter(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[MCExample],
    *,
    template: str | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
    capture: Any = None,
) -> Scores:
    """Letter scoring: argmax over the answer letters' next-token log-probabilities.

    Prompts are left-padded and sorted by length (less padding); results come back in the
    order of ``examples``. With a ``RoutingCapture`` as ``capture``, each item also carries its
    last-token routing weights (``ItemResult.routing``, shape (layers, experts)).
    """
    _check_batch_size(batch_size)
    template = template or DEFAULT_LETTER_TEMPLATE
    limit = max_length or context_length(model, tokenizer)
    max_choices = max((len(ex.choices) for ex in examples), default=2)
    letter_ids = letter_token_ids(tokenizer, max_choices)  # refuses colliding letters up front
    encoded = [encode_text(tokenizer, letter_prompt(ex, template)) for ex in examples]
    order = sorted(range(len(examples)), key=lambda i: -len(encoded[i]))
    results: list[ItemResult | None] = [None] * len(examples)
    unusable: list[Unusable] = []
    pad = pad_id(tokenizer)
    with _progress(len(examples), "letter scoring", progress) as bar:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = left_pad([encoded[i] for i in rows], pad, limit)
            out = last_token_forward(model, batch, capture)
            log_probs = out.log_probs.cpu()
            for r, i in enumerate(rows):
                ex = examples[i]
                ids = letter_ids[: len(ex.choices)]
                scores = tuple(float(x) for x in log_probs[r, ids])
                truncated = len(encoded[i]) > limit
                if truncated:
                    unusable.append(
                        Unusable(
                            ex.id,
                            ex.task,
                            f"prompt of {len(encoded[i])} tokens cut to the last {limit}",
                            True,
                        )
                    )
                routing = None if out.routing is None else out.routing[r].detach().cpu()
                results[i] = ItemResult(
                    ex.id, ex.task, ex.answer, scores, _argmax(scores), None, truncated, True, routing
                )
            bar.update(len(rows))
    return Scores([r for r in results if r is not None], _in_order(unusable, examples))


# --- continuation scoring -----------------------------------------------------------------


def continuation_requests(example: MCExample, template: str | None = None) -> list[tuple[str, str]]:
    """The (context, continuation) pairs lm-evaluation-harness would score for ``example``.

    Partial scoring (``example.continuation`` set): each choice is a context and the fixed
    continuation follows it; otherwise the templated question is the context and each choice
    follows as ``" " + choice``.
    """
    if example.continuation is not None:
        return [(choice, TARGET_DELIMITER + example.continuation) for choice in example.choices]
    context = continuation_context(example, template)
    return [(context, TARGET_DELIMITER + choice) for choice in example.choices]


def choice_lengths(example: MCExample) -> list[int]:
    """What ``acc_norm`` divides by: the length in characters of each item of the choice list.

    lm-evaluation-harness divides by ``len(choice)`` for every entry of ``doc_to_choice`` -- the
    choice text without the leading space, and for partial scoring the context option.
    """
    return [len(choice) for choice in example.choices]


@dataclass(frozen=True)
class Loglikelihood:
    """The log-likelihood of one continuation, and how its input had to be treated."""

    value: float | None  # None: could not be scored (continuation longer than the context)
    truncated: bool
    context_tokens: int
    continuation_tokens: int


@torch.no_grad()
def loglikelihoods(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[tuple[str, str]],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
    desc: str = "log-likelihoods",
) -> list[Loglikelihood]:
    """Summed log-probability of each continuation after its context, as lm-evaluation-harness computes it.

    Inputs longer than ``max_length + 1`` tokens lose tokens from the left (the last token is
    only predicted, never fed). Requests are run longest first, right-padded without an
    attention mask (a causal model never attends to later positions), and only the logits of
    the continuation positions are computed.
    """
    _check_batch_size(batch_size)
    limit = max_length or context_length(model, tokenizer)
    pairs = [encode_pair(tokenizer, ctx, cont) for ctx, cont in requests]
    results: list[Loglikelihood | None] = [None] * len(requests)
    runnable = []
    for i, (ctx, cont) in enumerate(pairs):
        if len(cont) == 0:
            raise RomaError(f"continuation {requests[i][1]!r} encodes to zero tokens")
        if len(cont) > limit:
            results[i] = Loglikelihood(None, True, len(ctx), len(cont))
        else:
            runnable.append(i)
    # lm-evaluation-harness's order: longest first, ties by the tokens themselves.
    runnable.sort(key=lambda i: (-(len(pairs[i][0]) + len(pairs[i][1])), tuple(pairs[i][0] + pairs[i][1])))
    device = _device(model)
    pad = pad_id(tokenizer)
    with _progress(len(requests), desc, progress) as bar:
        bar.update(len(requests) - len(runnable))
        for start in range(0, len(runnable), batch_size):
            rows = runnable[start : start + batch_size]
            inputs = [(pairs[i][0] + pairs[i][1])[-(limit + 1) :][:-1] for i in rows]
            width = max(len(x) for x in inputs)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            for r, x in enumerate(inputs):
                ids[r, : len(x)] = torch.tensor(x, dtype=torch.long)
            # Positions that predict a continuation token lie in [len(x) - n_cont, len(x)); keep the
            # logits from the earliest such position of the batch to the end, nothing before.
            first = min(len(x) - len(pairs[i][1]) for x, i in zip(inputs, rows))
            keep = width - first
            logits = model(input_ids=ids.to(device), logits_to_keep=keep, use_cache=False).logits
            for r, (x, i) in enumerate(zip(inputs, rows)):
                cont = pairs[i][1]
                lo = len(x) - len(cont) - first
                row = torch.log_softmax(logits[r, lo : lo + len(cont)].float(), dim=-1)
                target = torch.tensor(cont, dtype=torch.long, device=row.device)
                value = float(row.gather(1, target[:, None]).sum())
                total = len(pairs[i][0]) + len(cont)
                results[i] = Loglikelihood(value, total > limit + 1, len(pairs[i][0]), len(cont))
            bar.update(len(rows))
    return [r for r in results if r is not None]


def score_continuation(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[MCExample],
    *,
    template: str | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
) -> Scores:
    """Continuation scoring (lm-evaluation-harness ``multiple_choice``): ``acc`` and ``acc_norm``.

    All choices of all examples are batched together as one list of requests.
    """
    limit = max_length or context_length(model, tokenizer)
    requests: list[tuple[str, str]] = []
    spans: list[tuple[int, int]] = []
    for ex in examples:
        reqs = continuation_requests(ex, template)
        spans.append((len(requests), len(requests) + len(reqs)))
        requests.extend(reqs)
    lls = loglikelihoods(
        model, tokenizer, requests, batch_size=batch_size, max_length=limit, progress=progress,
        desc="continuation scoring",
    )  # fmt: skip
    items: list[ItemResult] = []
    unusable: list[Unusable] = []
    for ex, (lo, hi) in zip(examples, spans):
        mine = lls[lo:hi]
        if any(ll.value is None for ll in mine):
            longest = max(ll.continuation_tokens for ll in mine)
            reason = f"a continuation of {longest} tokens does not fit the {limit}-token context; not scored"
            unusable.append(Unusable(ex.id, ex.task, reason, False))
            items.append(ItemResult(ex.id, ex.task, ex.answer, (), -1, -1, True, False))
            continue
        scores = tuple(float(ll.value) for ll in mine)  # type: ignore[arg-type]
        truncated = any(ll.truncated for ll in mine)
        if truncated:
            longest = max(ll.context_tokens + ll.continuation_tokens for ll in mine)
            unusable.append(
                Unusable(ex.id, ex.task, f"input of {longest} tokens cut from the left to {limit + 1}", True)
            )
        norm = [s / n for s, n in zip(scores, choice_lengths(ex))]
        items.append(ItemResult(ex.id, ex.task, ex.answer, scores, _argmax(scores), _argmax(norm), truncated))
    return Scores(items, unusable)


# --- the entry point ----------------------------------------------------------------------


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[MCExample],
    *,
    scoring: str = "continuation",
    batch_size: int = 8,
    max_length: int | None = None,
    template: str | None = None,
    progress: bool = True,
) -> EvalResult:
    """Score every example and return per-item results with overall and per-task figures.

    >>> from tests.tiny_models import build_tiny_model  # doctest: +SKIP
    >>> result = evaluate(model, tokenizer, examples, scoring="continuation")  # doctest: +SKIP
    >>> result.acc, result.acc_norm, result.summary()["tasks"]  # doctest: +SKIP
    """
    if scoring not in SCORINGS:
        raise RomaError(f"unknown scoring {scoring!r}; choose one of: {', '.join(SCORINGS)}")
    if max_length is not None and max_length < 1:
        raise RomaError(f"max length must be at least 1, got {max_length}")
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        score = score_letter if scoring == "letter" else score_continuation
        scores = score(
            model, tokenizer, examples, template=template, batch_size=batch_size, max_length=max_length,
            progress=progress,
        )  # fmt: skip
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    return EvalResult(scoring, scores.items, scores.unusable, seconds)
