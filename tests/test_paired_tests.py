"""Per-seed paired McNemar tests, seed intervals and per-task accuracy of an experiment grid."""

from __future__ import annotations

import pytest

from moe_roma.experiments.grid import paired_tests, per_task_accuracy
from moe_roma.io.errors import RomaError
from moe_roma.scoring.stats import mean_interval


def _details(correct_a: list[list[bool]], correct_b: list[bool]) -> dict:
    out = {f"a/seed{s}": {"splits": {"in_dist": {"correct": c}}} for s, c in enumerate(correct_a)}
    out |= {f"b/seed{s}": {"splits": {"in_dist": {"correct": correct_b}}} for s in range(len(correct_a))}
    return out


def test_paired_tests_report_each_seed_and_the_mean_difference():
    b = [True] * 20 + [False] * 20
    a0 = [True] * 40  # fixes all 20: McNemar p = 2 / 2^20
    a1 = [True] * 20 + [False] * 20  # the same as b: p = 1
    [t] = paired_tests(_details([a0, a1], b), [["a", "b"]], ["a", "b"], ["in_dist"], [0, 1], "exp.yaml")
    assert (t["a"], t["b"], t["split"]) == ("a", "b", "in_dist")
    assert [x["diff"] for x in t["per_seed"]] == [0.5, 0.0] and t["mean_diff"] == 0.25
    assert t["per_seed"][0]["p_value"] == pytest.approx(2 / 2**20) and t["per_seed"][1]["p_value"] == 1.0
    assert t["n_significant"] == 1 and t["ci"][0] < 0.25 < t["ci"][1]


def test_a_pair_naming_an_unknown_method_is_refused():
    with pytest.raises(RomaError, match="'paired' entries"):
        paired_tests({}, [["a", "zzz"]], ["a", "b"], ["in_dist"], [0], "exp.yaml")


def test_mean_interval_is_a_t_interval():
    lo, hi = mean_interval([0.80, 0.82, 0.84])
    assert lo < 0.82 < hi and hi - lo == pytest.approx(2 * 4.302653 * 0.02 / 3**0.5, rel=1e-5)
    assert mean_interval([0.5]) is None


def test_per_task_accuracy_is_the_mean_over_seeds_of_each_family():
    def run(in_dist: dict, heldout: dict | None = None) -> dict:
        splits = {"in_dist": {"tasks": in_dist}}
        return {"splits": splits | ({"heldout_tasks": {"tasks": heldout}} if heldout else {})}

    details = {
        # A seed-free method's one outcome is reported under every seed.
        "base/seed0": run({"x": 0.5, "y": 0.25}, {"z": 1.0}),
        "base/seed1": run({"x": 0.5, "y": 0.25}, {"z": 1.0}),
        "roma/seed0": run({"x": 1.0, "y": 0.0}, {"z": 0.5}),
        "roma/seed1": run({"x": 0.5, "y": None}, {"z": 0.0}),
        "roma[k=3]/seed0": run({"x": 0.0}),
    }
    tasks = per_task_accuracy(details, ["base", "roma", "roma[k=3]"], ["in_dist", "heldout_tasks"])
    assert tasks == {
        "in_dist": {
            "x": {"base": 0.5, "roma": 0.75, "roma[k=3]": 0.0},
            # A family a run has no accuracy for (no items, or none scored) counts for no seed.
            "y": {"base": 0.25, "roma": 0.0, "roma[k=3]": None},
        }
    }  # heldout_tasks has one family, whose table would only repeat the split's accuracy
