"""The scoring engine: letter and continuation scoring of multiple-choice items, and their statistics.

``evaluate`` (``engine``) is the entry point. The two scorings, ``SCORINGS``, live in ``letter``
and ``continuation``; ``results`` holds what they return, ``logprobs`` the log-likelihood of a
continuation from logits (shared with training), ``stats`` the intervals and tests.

Names are imported on first use, so ``moe_roma.scoring.stats`` loads without torch.
"""

from __future__ import annotations

import importlib
from typing import Any, Literal, get_args

# The two ways to score a multiple-choice item; every command and config names them so. The
# Literal types config fields; SCORINGS is the same list for choices and checks.
Scoring = Literal["letter", "continuation"]
SCORINGS: tuple[str, ...] = get_args(Scoring)
# The defaults, here and nowhere else. Evaluation and experiments score as lm-evaluation-harness's
# multiple_choice does. `roma collect` and `roma train` keep the letter scoring their docs give
# (docs/training.md, docs/scaling.md): one sequence per item, for models that answer with a letter;
# `roma train` follows the routing file's recorded scoring anyway.
DEFAULT_SCORING: Scoring = "continuation"
TRAINING_SCORING: Scoring = "letter"

_EXPORTS = {
    "evaluate": "engine",
    "EvalResult": "results",
    "ItemResult": "results",
    "Scores": "results",
    "Unusable": "results",
    "score_letter": "letter",
    "score_continuation": "continuation",
    "loglikelihoods": "continuation",
    "continuation_requests": "continuation",
    "shares_context": "continuation",
    "Loglikelihood": "continuation",
    "TARGET_DELIMITER": "continuation",
    "summed_logprobs": "logprobs",
    "context_length": "common",
    "accuracy": "stats",
    "compare_paired": "stats",
    "mcnemar_exact": "stats",
    "wilson_interval": "stats",
}

__all__ = sorted([*_EXPORTS, "DEFAULT_SCORING", "SCORINGS", "Scoring", "TRAINING_SCORING"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"moe_roma.scoring.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'moe_roma.scoring' has no attribute {name!r}")
