"""The control pipeline's build workers: every dose is built once, however two workers interleave."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "control_pipeline.sh"

# Stands in for python: "building" a dose records the call, waits a little, then writes its gates.
FAKE_PY = """#!/usr/bin/env bash
echo "$*" >> "$CALLS.args"
out=""
args="$*"
while [ $# -gt 0 ]; do
    if [ "$1" = --out ]; then out=$2; fi
    shift
done
[ -n "$out" ] || exit 0
echo "$out" >> "$CALLS"
sleep 0.3
case "$args" in
    *" experiment "*) mkdir -p "$out" && echo '{}' > "$out/results.json" ;;
    *" diagnose "*) mkdir -p "$out" && echo '{}' > "$out/report.json" ;;
    *" collect "*) echo '{}' > "$out" ;;
    *) mkdir -p "$out" && echo '{}' > "$out/gates.json" ;;
esac
"""


def _pipeline(tmp_path, *mode: str) -> tuple[list[str], dict]:
    """A copy of the pipeline in ``tmp_path`` run with the fake python: its command and environment."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / "control_pipeline.sh")
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_PY)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PY": str(fake), "CALLS": str(tmp_path / "calls"), "LOCK_WAIT": "0.2"}
    return ["bash", str(tmp_path / "scripts" / "control_pipeline.sh"), *mode], env


def test_two_build_workers_build_each_dose_once_and_copy_every_gate_file(tmp_path):
    cmd, env = _pipeline(tmp_path, "build")
    workers = [
        subprocess.Popen([*cmd, "0", "0.25", "0.5"], env=env, cwd=tmp_path),
        subprocess.Popen([*cmd, "0.5", "0.25", "0"], env=env, cwd=tmp_path),
    ]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    calls = (tmp_path / "calls").read_text().split()
    assert sorted(calls) == ["runs/control/b0.00-s50", "runs/control/b0.25-s50", "runs/control/b0.50-s50"]
    copied = sorted(p.name for p in (tmp_path / "results" / "control" / "doses").iterdir())
    assert copied == ["b0.00-s50.json", "b0.25-s50.json", "b0.50-s50.json"]
    assert not list((tmp_path / "runs" / "control").glob("*.lock"))
    subprocess.run([*cmd, "0"], env=env, cwd=tmp_path, check=True)  # built already: nothing runs
    assert len((tmp_path / "calls").read_text().split()) == 3


def test_a_resumed_pipeline_skips_every_finished_experiment(tmp_path):
    # `roma experiment --resume` refuses a finished folder, so the pipeline must not call it there.
    cmd, env = _pipeline(tmp_path)
    doses = ["b1.00-s50", "b1.00-s25", "b0.00-s50", "b0.25-s50", "b0.50-s50", "b0.75-s50"]
    for dose in doses:
        (tmp_path / "runs" / "control" / dose).mkdir(parents=True)
        (tmp_path / "runs" / "control" / dose / "gates.json").write_text("{}")
        (tmp_path / "results" / "control" / "diagnose" / dose).mkdir(parents=True)
        (tmp_path / "results" / "control" / "diagnose" / dose / "report.json").write_text("{}")
    for folder in ["select", "ceiling", *doses]:
        (tmp_path / "results" / "control" / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / "results" / "control" / folder / "results.json").write_text("{}")
    subprocess.run(cmd, env=env, cwd=tmp_path, check=True)
    calls = (tmp_path / "calls.args").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["scripts/control_grid.py", "scripts/control_readouts.py"]


def test_two_grid_workers_run_each_dose_grid_and_diagnose_once(tmp_path):
    cmd, env = _pipeline(tmp_path, "grid")
    workers = [
        subprocess.Popen([*cmd, "0", "0.25"], env=env, cwd=tmp_path),
        subprocess.Popen([*cmd, "0.25", "0"], env=env, cwd=tmp_path),
    ]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    calls = sorted((tmp_path / "calls").read_text().split())
    expected = []
    for dose in ("b0.00-s50", "b0.25-s50"):
        expected += [
            f"results/control/{dose}",
            f"results/control/diagnose/{dose}",
            f"runs/control/{dose}",
            f"runs/control/{dose}/train-routing.json",
        ]
    assert calls == sorted(expected)
    assert not list((tmp_path / "runs" / "control").glob("*.lock"))
