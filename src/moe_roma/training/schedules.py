"""Learning-rate and lambda schedules, as pure functions of the optimiser step."""

from __future__ import annotations

import math


def resolve_warmup(steps: int | None, ratio: float, total: int) -> int:
    """Warm-up length: explicit steps, else a fraction of the run, so a small data set is not all warm-up."""
    if steps is not None:
        return max(0, min(int(steps), total))
    return max(0, min(int(round(ratio * total)), total))


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine":
        span = max(total - warmup, 1)
        progress = min(max(step - warmup, 0) / span, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def lambda_at(step: int, total: int, target: float, warmup: int, final: float | None) -> float:
    """lambda(t): linear warm-up from 0 to ``target``, then constant or a linear anneal to ``final``."""
    if warmup > 0 and step < warmup:
        return target * (step + 1) / warmup
    if final is None:
        return target
    span = max(total - 1 - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return target + (final - target) * progress
