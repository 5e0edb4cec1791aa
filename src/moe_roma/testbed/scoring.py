"""Continuation log-likelihood scoring of the testbed, through the project's scoring engine.

Each choice is scored as the sum of the log-probabilities of ``" " + choice`` after the
continuation context (``moe_roma.data.prompts.DEFAULT_CONTINUATION_TEMPLATE``); the
prediction is the argmax. This is how the tiny model is pre-trained to answer, so it is the
scoring under which its accuracy means something. ``roma testbed eval`` and ``roma eval`` use the
same engine (``moe_roma.scoring.continuation``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from moe_roma.data.example import MCExample
from moe_roma.scoring.continuation import score_continuation


def choice_logprobs(
    model, tokenizer, examples: Sequence[MCExample], batch_size: int = 64
) -> list[list[float]]:
    """Summed continuation log-probability of every choice of every example."""
    model.eval()
    scores = score_continuation(model, tokenizer, examples, batch_size=batch_size, progress=False)
    return [list(item.scores) for item in scores.items]


def accuracy_by_task(
    model, tokenizer, examples: Sequence[MCExample], batch_size: int = 64
) -> dict[str, float]:
    """The model's accuracy on ``examples``, overall and per family (keys ``"all"`` and each task name).
    ``scoring.stats.accuracy`` is another thing: the share of given correctness flags, with its interval."""
    return score_summary(model, tokenizer, examples, batch_size)["accuracy"]


def score_summary(model, tokenizer, examples: Sequence[MCExample], batch_size: int = 64) -> dict:
    """Accuracy (overall and per family) and two continuous scores from the same pass.

    ``answer_nll`` is the mean negative log-probability of the right answer's tokens, and
    ``choice_xent`` the mean cross-entropy of the right choice under a softmax over the choices'
    log-probabilities (chance: log of the number of choices). They move before accuracy does, so a
    short pre-training that leaves accuracy at chance still shows which model learned more.
    """
    preds = choice_logprobs(model, tokenizer, examples, batch_size)
    hits: dict[str, list[int]] = defaultdict(list)
    nll, xent = [], []
    for ex, s in zip(examples, preds):
        ok = int(max(range(len(s)), key=s.__getitem__) == ex.answer)
        hits["all"].append(ok)
        hits[ex.task].append(ok)
        top = max(s)
        log_norm = top + math.log(sum(math.exp(v - top) for v in s))
        nll.append(-s[ex.answer])
        xent.append(log_norm - s[ex.answer])
    n = max(len(nll), 1)
    return {
        "accuracy": {k: sum(v) / len(v) for k, v in sorted(hits.items())},
        "answer_nll": sum(nll) / n,
        "choice_xent": sum(xent) / n,
    }
