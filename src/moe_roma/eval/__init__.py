"""Evaluation: letter and continuation scoring, statistics, the lm-evaluation-harness bridge.

Oracle routing and C3PO re-mixing, the paper's baselines, live beside these modules.
"""

from moe_roma.eval.scoring import EvalResult, ItemResult, Scores, Unusable, evaluate
from moe_roma.eval.stats import accuracy, compare_paired, mcnemar_exact, wilson_interval

__all__ = [
    "EvalResult",
    "ItemResult",
    "Scores",
    "Unusable",
    "accuracy",
    "compare_paired",
    "evaluate",
    "mcnemar_exact",
    "wilson_interval",
]
