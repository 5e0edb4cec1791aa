"""What a training run says about its routing's health: each collapse is logged once per layer and
kind while it runs, and the same sentences, with their step, go into the model card.

The measure and the collapse check are ``manifold.health``'s, shared with ``roma diagnose``.
"""

from __future__ import annotations

import logging

from moe_roma.manifold.health import collapse


def warn_on_collapse(metrics: dict, num_experts: int, warned: set, log: logging.Logger) -> list[str]:
    """Log each collapse in ``metrics`` (a ``routing_health`` record) that ``warned`` has not seen yet,
    once per layer and kind; return the sentences logged now."""
    new = []
    for kind, layer, sentence in collapse(metrics, num_experts):
        if (kind, layer) not in warned:
            warned.add((kind, layer))
            log.warning("%s", sentence)
            new.append(sentence)
    return new


def collapse_events(records: list[dict], num_experts: int) -> list[str]:
    """What ``warn_on_collapse`` said over a run's ``metrics.jsonl`` records: one sentence per layer
    and kind, at the first step it happened (for the model card's failure modes).

    >>> record = {"step": 3, "entropy": {"5": 0.01, "6": None}, "utilisation": {"5": {"max": 0.9}}}
    >>> collapse_events([record], 8)[1]
    'expert utilisation in layer 5 collapsed: one expert takes 90% of top-k slots, at step 3'
    """
    out, seen = [], set()
    for r in records:
        for kind, layer, sentence in collapse(r, num_experts):
            if (kind, layer) not in seen:
                seen.add((kind, layer))
                out.append(f"{sentence}, at step {r.get('step')}")
    return out
