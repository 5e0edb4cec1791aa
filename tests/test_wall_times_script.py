"""scripts/wall_times.py: training seconds per method of an experiment folder."""

from __future__ import annotations

import json

from helpers.scripts import load_script


def test_each_methods_training_seconds_come_from_its_last_record(tmp_path, capsys):
    records = [
        {"run": "base", "outcome": {"splits": {}}},
        {"run": "roma/seed0", "outcome": {"train": {"seconds": 100.0}}},
        {"run": "roma/seed1", "outcome": {"train": {"seconds": 50.0}}},
        {"run": "roma/seed1", "outcome": {"train": {"seconds": 300.0}}},  # run again: the last one counts
        {"run": "router_tuning[lr=1e-3]/seed0", "outcome": {"train": {"seconds": 3600.0}}},
    ]
    (tmp_path / "outcomes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"torn')
    script = load_script("wall_times")
    assert script.wall_times(tmp_path) == {"roma": [100.0, 300.0], "router_tuning[lr=1e-3]": [3600.0]}
    assert script.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3 trained runs, 100-3600 s each, 1.1 h in all" in out
    assert "  roma: 2 runs, 100-300 s, mean 200 s" in out
    assert script.main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
