"""The scoring engine: letter and continuation scoring of multiple-choice items, and their statistics.

Names are imported on first use, so ``moe_roma.scoring.stats`` loads without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EvalResult": "engine",
    "ItemResult": "engine",
    "Scores": "engine",
    "Unusable": "engine",
    "evaluate": "engine",
    "accuracy": "stats",
    "compare_paired": "stats",
    "mcnemar_exact": "stats",
    "wilson_interval": "stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"moe_roma.scoring.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'moe_roma.scoring' has no attribute {name!r}")
