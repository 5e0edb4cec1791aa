"""Accuracy intervals, the paired difference interval and the exact McNemar test."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest

from moe_roma.scoring.stats import (
    accuracy,
    compare_paired,
    mcnemar_exact,
    paired_difference_ci,
    wilson_interval,
    z_value,
)


def test_wilson_matches_known_values():
    # Reference values of the Wilson score interval (z = 1.959964).
    assert wilson_interval(8, 10) == pytest.approx((0.4901624, 0.9433178), abs=1e-6)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775328), abs=1e-6)
    assert wilson_interval(10, 10) == pytest.approx((0.7224672, 1.0), abs=1e-6)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6)


def test_wilson_refuses_nonsense():
    with pytest.raises(ValueError):
        wilson_interval(1, 0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_accuracy_of_nothing_is_none_not_nan():
    a = accuracy([])
    assert (a.n, a.acc, a.ci) == (0, None, None)


def test_mcnemar_exact_matches_the_binomial_tail():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 * 0.5**6)
    # 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert mcnemar_exact(2, 10) == pytest.approx(2 * 79 / 4096)
    assert mcnemar_exact(10, 2) == mcnemar_exact(2, 10)
    # Exact integers: no underflow for thousands of discordant pairs.
    assert 0 < mcnemar_exact(900, 1100) < 1e-4


def test_paired_interval_matches_newcombe_example():
    # Newcombe (1998), paired example: a=36, b=12, c=2, d=0 gives (0.0569, 0.3404) for p1 - p2.
    # Our difference is tuned - base with b = only base right, so the interval is mirrored.
    lo, hi = paired_difference_ci(36, 12, 2, 0)
    assert (lo, hi) == pytest.approx((-0.3404, -0.0569), abs=1e-4)


def test_compare_paired_counts_and_difference():
    base = [True, True, False, False, True, False]
    tuned = [True, False, True, True, True, False]
    cmp = compare_paired(base, tuned)
    assert (cmp.both, cmp.only_base, cmp.only_tuned, cmp.neither) == (2, 1, 2, 1)
    assert cmp.diff == pytest.approx(1 / 6)
    assert cmp.p_value == pytest.approx(mcnemar_exact(1, 2))
    d = cmp.to_dict()
    assert set(d) >= {"n", "base_acc", "tuned_acc", "diff", "diff_ci", "mcnemar_p"}
    with pytest.raises(ValueError):
        compare_paired([True], [True, False])


def test_identical_models_differ_by_nothing():
    flags = [True, False, True, True, False]
    cmp = compare_paired(flags, flags)
    assert cmp.diff == 0 and cmp.p_value == 1.0
    lo, hi = cmp.diff_ci
    assert lo < 0 < hi


@given(st.integers(0, 300), st.integers(1, 300))
def test_wilson_contains_the_estimate(k, n):
    k = min(k, n)
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=200))
def test_paired_interval_contains_the_difference(pairs):
    cmp = compare_paired([a for a, _ in pairs], [b for _, b in pairs])
    lo, hi = cmp.diff_ci
    assert -1.0 <= lo <= cmp.diff + 1e-12 and cmp.diff - 1e-12 <= hi <= 1.0
    assert 0.0 < cmp.p_value <= 1.0
    assert math.isclose(cmp.diff, cmp.tuned.acc - cmp.base.acc, abs_tol=1e-12)


def _textbook_wilson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson's score interval written out (Wilson 1927): the reference for the library's."""
    z = z_value(confidence)
    p, z2n = k / n, z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(p * (1 - p) / n + z2n / (4 * n)) / (1 + z2n)
    return max(0.0, centre - half), min(1.0, centre + half)


CONFIDENCES = st.sampled_from([0.8, 0.9, 0.95, 0.99])


def test_wilson_is_the_textbook_formula_for_every_small_count():
    for n in range(1, 41):
        for k in range(n + 1):
            assert wilson_interval(k, n) == pytest.approx(_textbook_wilson(k, n, 0.95), abs=1e-12), (k, n)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 10**6), st.data(), CONFIDENCES)
def test_wilson_is_the_textbook_formula_and_scipys(n, data, confidence):
    k = data.draw(st.integers(0, n))
    ours = wilson_interval(k, n, confidence)
    assert ours == pytest.approx(_textbook_wilson(k, n, confidence), abs=1e-12)
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert ours == pytest.approx((ci.low, ci.high), abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 3000), st.integers(0, 3000))
def test_mcnemar_exact_is_scipys_two_sided_binomial_test(b, c):
    expected = 1.0 if b + c == 0 else binomtest(min(b, c), b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_mcnemar_exact_stays_positive_where_floating_point_underflows():
    # SciPy's binomtest gives 0.0 here (its tail underflows); the exact p is about 4.3e-271.
    assert 0 < mcnemar_exact(1085, 35) < 1e-270
