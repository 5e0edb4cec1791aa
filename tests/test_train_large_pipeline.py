"""scripts/train_large_pipeline.sh: the issue-28 study in order, stopping once for the generated configs
to be committed, and resumable (a finished experiment is not run again)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

# Stands in for python: records each call, and writes what the real command would leave behind.
FAKE_PY = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
args="$*"
out=""
json=""
while [ $# -gt 0 ]; do
    case $1 in
        --out) out=$2 ;;
        --json) json=$2 ;;
    esac
    shift
done
case "$args" in
    *" experiment "*) mkdir -p "$out/runs/roma/seed0" && echo '{}' > "$out/results.json"
        touch "$out/runs/roma/seed0/router_weights.safetensors" ;;
    *large_comparison.py*) touch configs/compare-downstream-large.yaml
        touch configs/size-curve-downstream-large.yaml ;;
    *" testbed export "*) mkdir -p "$out" && echo '{}' > "$out/train_large.jsonl" ;;
    *" eval "*) echo '{}' > "$json" && echo "acc: 0.6" ;;
esac
"""


def _pipeline(tmp_path: Path) -> tuple[list[str], dict]:
    """A copy of the pipeline (and train_fit.sh) in ``tmp_path``, run with the fake python."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "configs").mkdir()
    for name in ("train_large_pipeline.sh", "train_fit.sh"):
        shutil.copy(SCRIPTS / name, tmp_path / "scripts" / name)
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_PY)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PY": str(fake), "CALLS": str(tmp_path / "calls")}
    return ["bash", str(tmp_path / "scripts" / "train_large_pipeline.sh")], env


def _calls(tmp_path: Path) -> list[str]:
    lines = (tmp_path / "calls").read_text().splitlines()
    return [
        next(w for w in line.split() if w.endswith((".yaml", ".py")) or w in ("export", "eval"))
        for line in lines
    ]


def test_the_configs_stop_the_pipeline_once_and_a_rerun_skips_what_has_finished(tmp_path):
    cmd, env = _pipeline(tmp_path)
    first = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "commit them before any of their runs, then run this again" in first.stdout
    assert _calls(tmp_path) == ["configs/sweep-downstream-large.yaml", "scripts/large_comparison.py"]

    second = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert "sweep-downstream-large: finished" in second.stdout
    assert _calls(tmp_path)[2:] == [
        "configs/compare-downstream-large.yaml",
        "configs/size-curve-downstream-large.yaml",
        "export",
        "eval",
        "scripts/train_fit_summary.py",
        "scripts/size_curve.py",
    ]
    report = tmp_path / "results" / "compare-downstream-large-train-fit" / "train-roma-0.json"
    assert report.is_file()  # beside the comparison's folder, not inside it

    subprocess.run([*cmd, "compare", "curve"], env=env, cwd=tmp_path, check=True, capture_output=True)
    assert len(_calls(tmp_path)) == 8  # both experiments have finished: nothing runs


def test_a_step_without_its_inputs_or_unknown_is_one_sentence_and_exit_status_2(tmp_path):
    cmd, env = _pipeline(tmp_path)
    for step, said in (("compare", "the sweep has not finished"), ("fit", "unknown step 'fit'")):
        done = subprocess.run([*cmd, step], env=env, cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 2 and said in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "calls").exists()
