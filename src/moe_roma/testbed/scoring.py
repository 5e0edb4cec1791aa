"""Continuation log-likelihood scoring of the testbed, through the project's scoring engine.

Each choice is scored as the sum of the log-probabilities of ``" " + choice`` after the
continuation context (``moe_roma.data.prompts.DEFAULT_CONTINUATION_TEMPLATE``); the
prediction is the argmax. This is how the tiny model is pre-trained to answer, so it is the
scoring under which its accuracy means something. ``roma testbed eval`` and ``roma eval`` use the
same engine (``moe_roma.scoring.continuation``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from moe_roma.data.example import MCExample
from moe_roma.scoring.continuation import score_continuation


def choice_logprobs(model, tokenizer, examples: Sequence[MCExample], batch_size: int = 64) -> list[list[float]]:
    """Summed continuation log-probability of every choice of every example."""
    model.eval()
    scores = score_continuation(model, tokenizer, examples, batch_size=batch_size, progress=False)
    return [list(item.scores) for item in scores.items]


def accuracy(model, tokenizer, examples: Sequence[MCExample], batch_size: int = 64) -> dict[str, float]:
    """Overall and per-family accuracy (keys ``"all"`` and each task name)."""
    preds = choice_logprobs(model, tokenizer, examples, batch_size)
    hits: dict[str, list[int]] = defaultdict(list)
    for ex, s in zip(examples, preds):
        ok = int(max(range(len(s)), key=s.__getitem__) == ex.answer)
        hits["all"].append(ok)
        hits[ex.task].append(ok)
    return {k: sum(v) / len(v) for k, v in sorted(hits.items())}
