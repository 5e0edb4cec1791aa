"""What scoring returns: one ``ItemResult`` per example, the unusable ones, and the run's figures."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from moe_roma.scoring.stats import accuracy


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
    """What a scorer returns: one ``ItemResult`` per example, in the examples' order, and unusable ones."""

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
