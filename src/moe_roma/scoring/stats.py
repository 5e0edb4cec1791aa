"""Accuracy with confidence intervals, and paired comparisons of two models on the same items.

Pure Python (``math`` and ``statistics``): no SciPy needed.

* ``accuracy``: the fraction correct with a Wilson score interval, which behaves at 0% and
  100% and for small ``n``, where the textbook normal interval does not.
* ``compare_paired``: base versus tuned on the same items. The difference in accuracy gets
  Newcombe's hybrid score interval for paired proportions (his method 10), and the exact
  (binomial) McNemar test gives the p-value from the discordant pairs alone.

>>> accuracy([True, True, False, True]).acc
0.75
>>> round(mcnemar_exact(0, 6), 4)  # 6 items fixed, none broken: p = 2 * 0.5**6
0.0312
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from statistics import NormalDist
from typing import Any


def z_value(confidence: float = 0.95) -> float:
    """The two-sided standard-normal quantile: 1.96 for 95%.

    >>> round(z_value(0.95), 4)
    1.96
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n``.

    >>> [round(x, 4) for x in wilson_interval(8, 10)]
    [0.4902, 0.9433]
    >>> wilson_interval(0, 5)[0]
    0.0
    """
    if n <= 0:
        raise ValueError("a proportion needs at least one trial")
    if not 0 <= k <= n:
        raise ValueError(f"k={k} is not within 0..n={n}")
    z = z_value(confidence)
    p = k / n
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(p * (1 - p) / n + z2n / (4 * n)) / (1 + z2n)
    # At k=0 or k=n the bound is 0 or 1 exactly; the formula only gets there up to rounding.
    lower = 0.0 if k == 0 else max(0.0, centre - half)
    upper = 1.0 if k == n else min(1.0, centre + half)
    return lower, upper


@dataclass(frozen=True)
class Accuracy:
    """Fraction correct with its interval; ``acc`` and ``ci`` are None when there are no items."""

    n: int
    correct: int
    acc: float | None
    ci: tuple[float, float] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "correct": self.correct,
            "acc": self.acc,
            "acc_ci": list(self.ci) if self.ci else None,
        }


def accuracy(correct: Sequence[bool], confidence: float = 0.95) -> Accuracy:
    """Accuracy of a list of correct flags, with a Wilson interval.

    >>> a = accuracy([True] * 3 + [False])
    >>> a.acc, [round(x, 3) for x in a.ci]
    (0.75, [0.301, 0.954])
    """
    n = len(correct)
    k = sum(bool(c) for c in correct)
    if n == 0:
        return Accuracy(0, 0, None, None)
    return Accuracy(n, k, k / n, wilson_interval(k, n, confidence))


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts ``b`` and ``c``.

    Under the null hypothesis (both models equally accurate) each discordant pair goes either
    way with probability 1/2, so ``min(b, c)`` is Binomial(b + c, 1/2); the p-value doubles its
    lower tail. Computed with exact integers, so it holds for any number of items. It equals
    ``scipy.stats.binomtest(min(b, c), b + c).pvalue`` within 1e-12 (tests/test_eval_stats.py) but
    is kept: SciPy's floating-point tail underflows to p = 0 for very uneven splits (1085 vs 35).

    >>> mcnemar_exact(5, 5)
    1.0
    >>> round(mcnemar_exact(2, 10), 5)
    0.03857
    """
    if b < 0 or c < 0:
        raise ValueError("discordant counts cannot be negative")
    n = b + c
    if n == 0:
        return 1.0
    # Each binomial coefficient from the previous one: exact integers at O(n) big-integer steps
    # (math.comb per term was quadratic: 2 s for 6,000 discordant pairs).
    term = tail = 1
    for i in range(min(b, c)):
        term = term * (n - i) // (i + 1)
        tail += term
    return float(min(Fraction(1), Fraction(2 * tail, 2**n)))


def paired_difference_ci(
    both: int, only_base: int, only_tuned: int, neither: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Newcombe's hybrid score interval for the paired difference ``acc(tuned) - acc(base)``.

    Built from each model's Wilson interval and the correlation between the two models'
    correctness on the same items (Newcombe 1998, Statistics in Medicine 17:2635, method 10).
    It stays inside [-1, 1] and behaves when discordant pairs are few, unlike the Wald interval.

    >>> lo, hi = paired_difference_ci(50, 5, 15, 30)
    >>> lo < 0.10 < hi
    True
    """
    a, b, c, d = both, only_base, only_tuned, neither
    n = a + b + c + d
    if n <= 0:
        raise ValueError("a paired comparison needs at least one item")
    p1, p2 = (a + b) / n, (a + c) / n  # base, tuned
    l1, u1 = wilson_interval(a + b, n, confidence)
    l2, u2 = wilson_interval(a + c, n, confidence)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    phi = 0.0 if margins == 0 else (a * d - b * c) / math.sqrt(margins)
    diff = p2 - p1
    lower = math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    upper = math.sqrt(max(0.0, (u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2))
    return max(-1.0, diff - lower), min(1.0, diff + upper)


@dataclass(frozen=True)
class PairedComparison:
    """Base versus tuned on the same ``n`` items."""

    n: int
    base: Accuracy
    tuned: Accuracy
    both: int  # both right
    only_base: int  # the tuned model broke these
    only_tuned: int  # the tuned model fixed these
    neither: int
    diff: float | None  # acc(tuned) - acc(base)
    diff_ci: tuple[float, float] | None
    p_value: float | None  # exact McNemar

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "base_acc": self.base.acc,
            "tuned_acc": self.tuned.acc,
            "diff": self.diff,
            "diff_ci": list(self.diff_ci) if self.diff_ci else None,
            "mcnemar_p": self.p_value,
            "both_correct": self.both,
            "only_base_correct": self.only_base,
            "only_tuned_correct": self.only_tuned,
            "neither_correct": self.neither,
        }

    def line(self, label: str = "acc") -> str:
        """One line, e.g.
        ``acc: base 0.4770 -> tuned 0.5120, diff +0.0350 [+0.0102, +0.0597], McNemar p=0.0061 (n=1172)``.
        """
        if self.diff is None or self.diff_ci is None:
            return f"{label}: no items in common"
        lo, hi = self.diff_ci
        return (
            f"{label}: base {self.base.acc:.4f} -> tuned {self.tuned.acc:.4f}, diff {self.diff:+.4f} "
            f"[{lo:+.4f}, {hi:+.4f}], McNemar p={self.p_value:.4g} "
            f"(fixed {self.only_tuned}, broke {self.only_base}, n={self.n})"
        )


def compare_paired(base: Sequence[bool], tuned: Sequence[bool], confidence: float = 0.95) -> PairedComparison:
    """Compare two models' correct flags on the same items (same order).

    >>> cmp = compare_paired([True, False, False, True], [True, True, True, False])
    >>> cmp.diff, cmp.only_tuned, cmp.only_base
    (0.25, 2, 1)
    """
    if len(base) != len(tuned):
        raise ValueError(f"paired lists differ in length: {len(base)} vs {len(tuned)}")
    a = sum(1 for x, y in zip(base, tuned) if x and y)
    b = sum(1 for x, y in zip(base, tuned) if x and not y)
    c = sum(1 for x, y in zip(base, tuned) if y and not x)
    d = len(base) - a - b - c
    n = len(base)
    if n == 0:
        return PairedComparison(0, accuracy([]), accuracy([]), 0, 0, 0, 0, None, None, None)
    return PairedComparison(
        n=n,
        base=accuracy(base, confidence),
        tuned=accuracy(tuned, confidence),
        both=a,
        only_base=b,
        only_tuned=c,
        neither=d,
        diff=(c - b) / n,
        diff_ci=paired_difference_ci(a, b, c, d, confidence),
        p_value=mcnemar_exact(b, c),
    )


def chance_level(correct: Sequence[bool], n_choices: Sequence[int]) -> tuple[bool, float, float]:
    """(near chance, accuracy, chance accuracy): whether ``correct`` is no better than guessing.

    Chance is the mean of ``1 / n_choices``; "near" means the accuracy lies below chance plus two
    standard errors of a guesser's accuracy over the same items. Fewer than 20 items never count as
    near chance (too few to tell).

    >>> chance_level([True] + [False] * 39, [4] * 40)[0], chance_level(
    ...     [True] * 30 + [False] * 10, [4] * 40
    ... )[0]
    (True, False)
    """
    n = len(correct)
    acc = sum(correct) / n if n else 0.0
    if n < 20:
        return False, acc, float("nan")
    p = [1 / max(c, 1) for c in n_choices]
    chance = sum(p) / n
    se = math.sqrt(sum(q * (1 - q) for q in p)) / n
    return acc <= chance + 2 * se, acc, chance


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval for the mean of a few per-seed values (None for fewer than two)."""
    if len(values) < 2:
        return None
    from scipy.stats import t

    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return (mean - half, mean + half)
