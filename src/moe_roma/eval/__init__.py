"""Evaluation: letter and continuation scoring, statistics, the lm-evaluation-harness bridge.

Oracle routing and C3PO re-mixing, the paper's baselines, live beside these modules.
Names are imported on first use, so ``moe_roma.eval.stats`` loads without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EvalResult": "scoring",
    "ItemResult": "scoring",
    "Scores": "scoring",
    "Unusable": "scoring",
    "evaluate": "scoring",
    "accuracy": "stats",
    "compare_paired": "stats",
    "mcnemar_exact": "stats",
    "wilson_interval": "stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"moe_roma.eval.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'moe_roma.eval' has no attribute {name!r}")
