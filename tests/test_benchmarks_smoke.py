"""The CPU benchmarks still run: each script's ``main`` on its ``--quick`` settings."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    # The scripts import their helpers as `_common`, as when run from the command line.
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


def _last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


@pytest.mark.slow
def test_train_step_quick(capsys):
    speedup = _script("train_step").main(["--quick"])
    assert speedup > 0
    assert re.fullmatch(r"speedup: \d+\.\d\dx", _last_line(capsys))


def test_collect_quick(capsys):
    assert _script("collect").main(["--quick"]) > 0
    assert _last_line(capsys).startswith("speedup: ")


@pytest.mark.slow
def test_eval_quick(capsys):
    pytest.importorskip("accelerate", reason="lm-evaluation-harness's HFLM needs accelerate")
    assert _script("eval").main(["--quick"]) > 0
    assert _last_line(capsys).startswith("speedup: ")


def test_neighbours_quick(capsys):
    # 0: every checked query matches the brute force and every chunk size gives the same graph.
    assert _script("neighbours").main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "all arms identical: True" in out
    arms = [line for line in out.splitlines() if line.startswith(("torch, chunk", "faiss"))]
    assert len(arms) >= 2 and all(" 10/10 " in line for line in arms), out


@pytest.mark.slow
def test_gpu_scripts_run_on_cpu_with_a_tiny_model(capsys):
    # The GPU machine is lent only now and then: the scripts must not rot in between.
    collect = _script("gpu_collect_olmoe").main(["--quick", "--device", "cpu"])
    assert collect["speedup"] > 0 and collect["same_answers"] == collect["examples"]
    train = _script("gpu_train_olmoe").main(["--quick", "--device", "cpu"])
    assert (
        train["steps"] == 8
        and train["prefix_cache_device"] == "cpu"
        and train["per_step_speedup_vs_naive"] > 0
    )


def test_peak_helpers_see_a_known_allocation():
    import torch

    common = _script("_common")
    mib = common.torch_peak_mib(lambda: torch.ones(8 * 2**20 // 4).sum())  # 8 MiB of float32
    assert 8 <= mib < 9
    if common.peak_rss_supported():
        with common.pinned_mmap_threshold(), common.PeakRSS() as m:
            torch.ones(64 * 2**20 // 4).sum()  # 64 MiB, touched
        assert 60 < m.mib < 80


@pytest.mark.slow
def test_gpu_fsdp_script_runs_on_cpu_with_a_tiny_model(capsys):
    # Sharded (FSDP2 over a one-process group) and whole, the same tiny Qwen3-MoE config: both train
    # every step.
    report = _script("gpu_train_fsdp").main(["--quick", "--device", "cpu"])
    assert [a["steps"] for a in report["arms"].values()] == [4, 4]
    assert report["arms"]["fsdp"]["params"] == report["arms"]["none"]["params"] > 0
    assert _last_line(capsys).startswith("fsdp / none seconds per step on one device: ")
