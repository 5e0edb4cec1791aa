"""scripts/target_test_groups.py: a diagnose report's target test summed over two groups of families."""

from __future__ import annotations

import json

from helpers.scripts import load_script


def _task(n: int, own: int, right: dict[str, int], fixed: dict[str, int]) -> dict:
    failed = n - own
    return {
        "n": n,
        "base": {"k": own},
        "targets": {
            t: {"accuracy": {"k": right[t]}, "fixed": {"k": fixed[t], "n": failed}}
            for t in ("roma", "random", "same_task", "uniform")
        },
    }


def test_groups_sum_counts_over_their_families_and_unknown_families_are_refused(tmp_path, capsys):
    script = load_script("target_test_groups")
    per_task = {
        "a": _task(
            10,
            6,
            {"roma": 5, "random": 4, "same_task": 6, "uniform": 2},
            dict.fromkeys(("roma", "random", "same_task", "uniform"), 1),
        ),
        "b": _task(
            10,
            4,
            {"roma": 3, "random": 2, "same_task": 4, "uniform": 1},
            {"roma": 2, "random": 0, "same_task": 0, "uniform": 1},
        ),
        "c": _task(
            20,
            10,
            {"roma": 8, "random": 6, "same_task": 10, "uniform": 4},
            {"roma": 3, "random": 2, "same_task": 0, "uniform": 1},
        ),
    }
    rows = script.group_rows(per_task, ["a", "b"])
    named, rest = rows
    assert (named["n"], named["own"], rest["families"]) == (20, 0.5, ["c"])
    assert named["roma"] == {"accuracy": 0.4, "fixed": 3, "failed": 10}
    assert rest["same_task"] == {"accuracy": 0.5, "fixed": 0, "failed": 10}
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"target_test": {"per_task": per_task}}))
    assert script.main([str(report), "a,b"]) == 0
    assert "| named: a, b | 20 | 50.0% | 40.0% (3 of 10) |" in capsys.readouterr().out
    assert script.main([str(report), "a,z"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "families not in the report's target test: z" in err
