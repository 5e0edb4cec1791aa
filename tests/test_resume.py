"""Interruption and resume, unsafe files, and the non-finite guard."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from moe_roma.io.errors import DataError, RomaError
from moe_roma.methods.roma.config import train_config
from moe_roma.methods.roma.trainer import RouterTrainer
from moe_roma.models.checkpoint import load_router_checkpoint
from moe_roma.training.state import STATE_NAME


def train_cmd(w: Path, out: Path, resume: bool = False) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "moe_roma.cli",
        "train",
        "--model",
        str(w / "model"),
        "--routing",
        str(w / "routing.json"),
        "--out",
        str(out),
        "--schedule.epochs",
        "6",
        "--schedule.batch-size",
        "2",
        "--optimizer.lr",
        "0.02",
        "--layers",
        "last2",
        "--runtime.save-every",
        "1",
        "--no-progress",
        "router_dropout=0.1",
        "graph.dedupe_threshold=1.01",
    ]
    return cmd + (["--resume"] if resume else [])


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


KILL_AT = Path(__file__).parent / "helpers" / "kill_at.py"
SAVE_STATE = "moe_roma.methods.roma.trainer:save_train_state"


@pytest.mark.slow
@pytest.mark.parametrize(
    "call, when",
    [
        (1, "before"),  # before any state exists: resume starts from step 0
        (1, "after"),  # right after the first state
        (30, "before"),  # mid-run, with the previous state on disk and this one never written
        (71, "after"),  # one step from the end
    ],
)
def test_sigkill_at_a_chosen_step_then_resume_gives_bit_identical_routers(resume_workspace, call, when):
    """The run kills itself at the ``call``-th state save (one state per step), so the kill point is
    the same whatever the machine's load; resuming must give the uninterrupted run's routers."""
    w = resume_workspace
    straight = w / "straight"
    if not (straight / "router_weights.safetensors").exists():
        subprocess.run(train_cmd(w, straight), check=True, env=ENV, capture_output=True)
    reference = load_file(straight / "router_weights.safetensors")
    out = w / f"killed-{call}-{when}"
    args = train_cmd(w, out)[3:]  # drop "python -m moe_roma.cli"
    proc = subprocess.run(
        [sys.executable, str(KILL_AT), SAVE_STATE, str(call), when, "--", *args],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (out / "router_weights.safetensors").exists(), "killed before the end: no final checkpoint yet"
    assert (out / STATE_NAME).exists() == (call > 1 or when == "after")
    subprocess.run(train_cmd(w, out, resume=True), check=True, env=ENV, capture_output=True)
    resumed = load_file(out / "router_weights.safetensors")
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), (call, when, name)
    steps = [
        int(line.split('"step": ')[1].split(",")[0])
        for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == sorted(set(steps)) and steps[-1] == 72


def test_resume_with_other_settings_is_refused(resume_workspace, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        train_cmd(resume_workspace, out)[:-0] if False else train_cmd(resume_workspace, out),
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    # Leave a state behind as if the run had been killed, then resume with another learning rate.
    from moe_roma.routing.store import load_routing_store

    store = load_routing_store(resume_workspace / "routing.json")
    from moe_roma.models.loading import load_model

    model, tok = load_model(resume_workspace / "model")
    cfg = train_config(
        layers="last2",
        schedule={"epochs": 2, "batch_size": 4},
        runtime={"save_every": 1},
        graph={"dedupe_threshold": 1.01},
    )
    trainer = RouterTrainer(model, tok, store, cfg, out, progress=False)
    params = trainer.params
    opt = torch.optim.AdamW(list(params.values()))
    from moe_roma.training.state import save_train_state

    save_train_state(out, 1, params, opt, {**trainer.fingerprint(), "skipped": 0})
    trainer2 = RouterTrainer(model, tok, store, cfg.merge(["optimizer.lr=1.0"]), out, progress=False)
    with pytest.raises(
        RomaError, match=r"other training settings \(setting optimizer.lr is 7e-05 in the state, 1.0 now"
    ):
        trainer2.train(resume=True)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


def test_a_crafted_pickle_in_a_checkpoint_folder_is_refused_and_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "router_config.json").write_text('{"format_version": 1}')
    (folder / "router_weights.safetensors").write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(DataError, match="not a readable safetensors file"):
        load_router_checkpoint(folder)
    torch.save({"x": _Evil()}, folder / "router_weights.safetensors")
    with pytest.raises(DataError, match="not a readable safetensors file"):
        load_router_checkpoint(folder)
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_non_finite_steps_are_skipped_counted_and_stop_the_run(resume_workspace, tmp_path):
    from moe_roma.models.loading import load_model
    from moe_roma.routing.store import load_routing_store

    model, tok = load_model(resume_workspace / "model")
    store = load_routing_store(resume_workspace / "routing.json")
    # An absurd learning rate without clipping drives the routers to inf, so every later loss is NaN.
    cfg = train_config(
        layers="last2",
        schedule={"epochs": 5, "batch_size": 2, "warmup_ratio": 0.0},
        optimizer={"lr": 1e30, "grad_clip": None},
        runtime={"max_nonfinite_steps": 3, "save_every": 1},
        graph={"dedupe_threshold": 1.01},
    )
    trainer = RouterTrainer(model, tok, store, cfg, tmp_path / "run", progress=False)
    with pytest.raises(RomaError, match="non-finite"):
        trainer.train()
    assert (tmp_path / "run" / STATE_NAME).exists(), "the last good state is kept"
    assert not (tmp_path / "run" / "router_weights.safetensors").exists()
