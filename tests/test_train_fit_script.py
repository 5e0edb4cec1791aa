"""scripts/train_fit.sh: every trained run of an experiment folder scored on its training items, resumable."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Stands in for `roma eval --json REPORT`: a report in the shape scripts/train_fit_summary.py reads.
FAKE_ROMA = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
while [ $# -gt 0 ]; do
    if [ "$1" = --json ]; then report=$2; fi
    shift
done
echo '{"acc": 0.6, "base": {"acc": 0.5},' \\
    '"comparison": {"acc": {"only_tuned_correct": 3, "only_base_correct": 1}}}' > "$report"
echo "acc: 0.600"
"""


def test_every_finished_run_is_scored_once_and_summarised(tmp_path):
    for run in ("router_tuning/seed0", "router_tuning/seed1", "roma/seed0", "roma/seed1"):
        (tmp_path / "table" / "runs" / run).mkdir(parents=True)
        if run != "roma/seed1":  # still training: no router weights yet
            (tmp_path / "table" / "runs" / run / "router_weights.safetensors").write_bytes(b"")
    fake = tmp_path / "fake_roma"
    fake.write_text(FAKE_ROMA)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "ROMA": str(fake), "PY": sys.executable, "CALLS": str(tmp_path / "calls")}
    cmd = ["bash", "scripts/train_fit.sh", str(tmp_path / "table"), "train.jsonl", str(tmp_path / "out")]
    done = subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    assert "roma/seed1: not finished (no router_weights.safetensors), skipped" in done.stderr
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| roma | 1 | 50.0% | 60.0% ± 0.0% | 3.0 | 1.0 |" in table
    assert "| router_tuning | 2 | 50.0% | 60.0% ± 0.0% | 3.0 | 1.0 |" in table
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == 3 and all("--compare-base --data train.jsonl" in c for c in calls)
    subprocess.run([*cmd, "roma"], env=env, cwd=ROOT, check=True, capture_output=True)
    assert len((tmp_path / "calls").read_text().splitlines()) == 3  # finished reports are kept


def test_an_output_inside_the_experiment_folder_is_refused_before_any_run(tmp_path):
    (tmp_path / "table" / "runs" / "roma" / "seed0").mkdir(parents=True)
    env = {**os.environ, "ROMA": "false", "PY": sys.executable}
    table = tmp_path / "table"
    cmd = ["bash", "scripts/train_fit.sh", str(table), "train.jsonl", str(table / "fit")]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "is inside the experiment folder" in done.stderr
    assert not (tmp_path / "table" / "fit").exists()
