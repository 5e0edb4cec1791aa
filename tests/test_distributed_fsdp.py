"""Sharded training (FSDP2, gloo, 2 CPU processes) against one process, for two families (Qwen2-MoE has a
shared expert): the same routers, about half the parameter bytes per rank, and a bit-identical resume."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from helpers.examples import make_examples, write_data
from helpers.ranks import KILL_AT, base_env, free_port, torchrun
from helpers.tiny_models import save_tiny_model
from moe_roma.cli import main

FAMILIES = ["olmoe", "qwen2_moe"]
SAVE_STATE = "moe_roma.methods.roma.trainer:save_train_state"


def train_args(w, out, *extra):
    # 24 samples, global batch 6, 2 epochs: 8 steps; a state every 3 steps (saving does not change the maths).
    return [
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
        "--runtime.save-every",
        "3",
        "graph.dedupe_threshold=1.01",
        *extra,
    ]


def launch(script_args: list[str], module: bool = True) -> subprocess.CompletedProcess:
    run = torchrun()
    if run is None:
        pytest.skip("torchrun is not installed beside this Python")
    head = [run, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    return subprocess.run(
        [*head, *(["-m", "moe_roma.cli"] if module else []), *script_args],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module", params=FAMILIES)
def runs(request, tmp_path_factory):
    """One family's workspace, its 1-process run and its 2-process sharded run."""
    w = tmp_path_factory.mktemp(f"fsdp-{request.param}")
    save_tiny_model(w / "model", request.param, num_layers=4)
    write_data(w / "train.jsonl", make_examples(24))
    assert (
        main(
            [
                "collect",
                "--model",
                str(w / "model"),
                "--data",
                str(w / "train.jsonl"),
                "--out",
                str(w / "routing.json"),
                "--layers",
                "last2",
                "--no-progress",
            ]
        )
        == 0
    )
    assert main(train_args(w, w / "one")) == 0
    proc = launch(train_args(w, w / "fsdp", "--shard", "fsdp"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return w


@pytest.mark.slow
def test_sharded_routers_match_one_process_at_the_same_global_batch(runs):
    a = load_file(runs / "one" / "router_weights.safetensors")
    b = load_file(runs / "fsdp" / "router_weights.safetensors")
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5)
        assert not torch.equal(a[name], load_file(runs / "model" / "model.safetensors")[name])  # it trained
    one = json.loads((runs / "one" / "router_config.json").read_text())
    two = json.loads((runs / "fsdp" / "router_config.json").read_text())
    assert one.keys() == two.keys()  # the same folder format, written once
    assert (two["world_size"], two["sharding"]["shard"]) == (2, "fsdp")


@pytest.mark.slow
def test_each_rank_holds_at_most_0_6_of_the_parameter_bytes(runs):
    sharding = json.loads((runs / "fsdp" / "router_config.json").read_text())["sharding"]
    whole = json.loads((runs / "one" / "router_config.json").read_text())["sharding"]
    assert sharding["parameter_bytes"] == whole["parameter_bytes"] == whole["resident_parameter_bytes"][0]
    assert len(sharding["resident_parameter_bytes"]) == 2
    for held in sharding["resident_parameter_bytes"]:
        assert held <= 0.6 * sharding["parameter_bytes"], sharding


@pytest.mark.slow
@pytest.mark.parametrize("runs", ["olmoe"], indirect=True)  # one family is enough for resume
def test_sharded_resume_after_sigkill_is_bit_identical(runs):
    out = runs / "killed"
    # Rank 0 kills itself right after writing its second state (step 6 of 8); torchrun then stops rank 1.
    killed = launch(
        [str(KILL_AT), SAVE_STATE, "2", "after", "--", *train_args(runs, out, "--shard", "fsdp")],
        module=False,
    )
    assert killed.returncode != 0
    assert (out / "train_state.safetensors").is_file() and not (out / "router_config.json").exists()
    resumed = launch(train_args(runs, out, "--shard", "fsdp", "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_file(runs / "fsdp" / "router_weights.safetensors")
    b = load_file(out / "router_weights.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_shard_fsdp_without_torchrun_is_one_sentence_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out = tmp_path / "run"
    routing = tmp_path / "routing.json"
    routing.write_text("{}")
    code = main(
        [
            "train",
            "--model",
            str(tmp_path / "model"),
            "--routing",
            str(routing),
            "--out",
            str(out),
            "--shard",
            "fsdp",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "torchrun" in err[0], err
    assert not out.exists()
