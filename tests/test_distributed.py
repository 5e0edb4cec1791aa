"""Data-parallel training: 2 processes (gloo, CPU) give the routers that 1 process gives."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file


def cmd(w, out, launcher):
    return launcher + [
        "train",
        "--model",
        str(w / "model"),
        "--routing",
        str(w / "routing.json"),
        "--out",
        str(out),
        "--schedule.epochs",
        "2",
        "--schedule.batch-size",
        "6",
        "--optimizer.lr",
        "0.02",
        "--layers",
        "last2",
        "--no-progress",
        "graph.dedupe_threshold=1.01",
    ]


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(resume_workspace):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    single = resume_workspace / "ddp-1"
    subprocess.run(
        cmd(resume_workspace, single, [sys.executable, "-m", "moe_roma.cli"]),
        check=True,
        env=env,
        capture_output=True,
    )
    double = resume_workspace / "ddp-2"
    proc = subprocess.run(
        cmd(
            resume_workspace,
            double,
            [torchrun, "--nproc_per_node", "2", "--master_port", "29533", "-m", "moe_roma.cli"],
        ),
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = load_file(single / "router_weights.safetensors")
    b = load_file(double / "router_weights.safetensors")
    assert a.keys() == b.keys()
    import json

    assert json.loads((double / "router_config.json").read_text())["world_size"] == 2
    for name in a:
        # Same maths, other summation order: Adam's normalised step can magnify a ~1e-9 gradient difference
        # on a near-zero component to ~1e-6, so compare at float-rounding level, not bit for bit.
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5)
    # metrics.jsonl holds the whole batch's figures, reduced over the processes, not rank 0's half of them.
    one, two = (
        [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()] for run in (single, double)
    )
    assert len(one) == len(two)
    for r1, r2 in zip(one, two):
        for key in ("loss", "task_loss", "manifold_loss", "topk_changed"):
            assert r2[key] == pytest.approx(r1[key], rel=1e-4, abs=1e-6), (r1["step"], key)
        assert r2["entropy"] == pytest.approx(r1["entropy"], rel=1e-4)
        for layer, u in r1["utilisation"].items():
            assert r2["utilisation"][layer] == pytest.approx(u, rel=1e-4)
