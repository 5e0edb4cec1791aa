"""The entry point: ``evaluate`` scores examples by one of the two ``SCORINGS`` and returns an ``EvalResult``.

* ``letter`` (``moe_roma.scoring.letter``): argmax over the answer letters' next-token
  log-probabilities after a lettered prompt.
* ``continuation`` (``moe_roma.scoring.continuation``): lm-evaluation-harness's
  ``multiple_choice``, ``acc`` and ``acc_norm``, each question's context run once for all its
  choices.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma.data.example import MCExample
from moe_roma.io.errors import RomaError
from moe_roma.scoring import DEFAULT_SCORING, SCORINGS
from moe_roma.scoring.continuation import score_continuation
from moe_roma.scoring.letter import score_letter
from moe_roma.scoring.results import EvalResult


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[MCExample],
    *,
    scoring: str = DEFAULT_SCORING,
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
            model,
            tokenizer,
            examples,
            template=template,
            batch_size=batch_size,
            max_length=max_length,
            progress=progress,
        )
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    return EvalResult(scoring, scores.items, scores.unusable, seconds)
