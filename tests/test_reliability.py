"""Nothing lost, nothing silently wrong: the guarantees of docs/reliability.md that the bad-input matrix
(tests/test_bad_input_matrix.py) does not show by itself: what succeeds, what a stop leaves, what a
file's mode is, what a warning says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers.examples import make_examples, write_data
from helpers.tiny_models import save_tiny_model
from helpers.training import store_and_graph
from moe_roma.cli import main
from moe_roma.io.atomic import finite_json, write_json_atomic
from moe_roma.io.errors import RomaError
from moe_roma.io.lock import LOCK_NAME, FolderLock
from moe_roma.io.paths import guard_outputs
from moe_roma.methods.roma.config import train_config
from moe_roma.methods.roma.trainer import RouterTrainer
from moe_roma.models.checkpoint import load_router_checkpoint
from moe_roma.training.state import STATE_NAME

KILL_AT = Path(__file__).parent / "helpers" / "kill_at.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """A tiny OLMoE folder, 8 examples and their collected routing (layers last2)."""
    root = tmp_path_factory.mktemp("reliable")
    save_tiny_model(root / "model", "olmoe", num_layers=4)
    write_data(root / "train.jsonl", make_examples(8))
    assert (
        main(
            [
                "collect",
                "--model",
                str(root / "model"),
                "--data",
                str(root / "train.jsonl"),
                "--out",
                str(root / "routing.json"),
                "--layers",
                "last2",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    return root


def train(w: Path, out: Path, *extra) -> list[str]:
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
        "4",
        "--layers",
        "last2",
        "--runtime.device",
        "cpu",
        "--no-progress",
        *map(str, extra),
        "graph.dedupe_threshold=1.01",
    ]


def strict_json_lines(path: Path) -> list[dict]:
    def refuse(name):
        raise ValueError(f"{name} in {path}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


# --- inputs are sacred -------------------------------------------------------------------------------


def test_guard_outputs_compares_resolved_paths_links_and_outputs(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    (tmp_path / "link.jsonl").symlink_to(data)
    (tmp_path / "hard.jsonl").hardlink_to(data)
    guard_outputs({"--data": data}, {"--out": tmp_path / "r.json", "--json": None})
    for out in (data, tmp_path / "link.jsonl", tmp_path / "hard.jsonl", tmp_path / "sub" / ".." / "d.jsonl"):
        with pytest.raises(RomaError, match="is the input --data"):
            guard_outputs({"--data": data}, {"--out": out})
    with pytest.raises(RomaError, match="same file"):
        guard_outputs({}, {"--json": tmp_path / "a", "--predictions": tmp_path / "a"})
    guard_outputs({"--model": "org/hub-id"}, {"--out": tmp_path / "r.json"})  # a hub id is no local path


def test_a_finished_run_is_retrained_only_with_overwrite(w, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train(w, out)) == 0
    first = load_file(out / "router_weights.safetensors")
    assert main(train(w, out, "--optimizer.lr", "0.05")) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert main(train(w, out, "--optimizer.lr", "0.05", "--overwrite")) == 0
    second = load_file(out / "router_weights.safetensors")
    assert any(not torch.equal(first[k], second[k]) for k in first), "--overwrite trained again"
    assert json.loads((out / "router_config.json").read_text())["hyperparameters"]["lr"] == 0.05
    assert len(strict_json_lines(out / "metrics.jsonl")) == 4  # one run's metrics, not two
    assert not (out / LOCK_NAME).exists()


def test_the_lock_names_its_holder_and_a_stale_lock_file_blocks_nothing(w, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with FolderLock(out, "roma train"):
        assert main(train(w, out)) == 2
        err = capsys.readouterr().err
        assert f"in use by process {os.getpid()} (roma train)" in err and err.count("\n") == 1
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME], "the refused run wrote nothing"
    # A lock file left by a killed holder is not held by anyone: the next run takes it.
    (out / LOCK_NAME).write_text("999999 roma train\n")
    assert main(train(w, out)) == 0
    assert (out / "router_weights.safetensors").is_file() and not (out / LOCK_NAME).exists()


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_the_lock_never_follows_or_truncates_a_link_planted_at_its_name(tmp_path, link):
    victim = tmp_path / "elsewhere.txt"
    victim.write_text("precious\n")
    out = tmp_path / "run"
    out.mkdir()
    getattr(out / LOCK_NAME, f"{link}_to")(victim)
    with pytest.raises(RomaError, match=f"is a {'symbolic' if link == 'symlink' else 'hard'} link"):
        FolderLock(out, "roma train").acquire()
    assert victim.read_text() == "precious\n"


def test_an_interrupted_overwrite_keeps_the_previous_run(w, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert main(train(w, out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    stop_at(monkeypatch, "RouterTrainer.apply_step", 2)
    assert main(train(w, out, "--optimizer.lr", "0.05", "--overwrite", "--runtime.save-every", "1")) == 130
    err = capsys.readouterr().err
    assert f"the previous run in {out} is kept as it was" in err and err.count("\n") == 1, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "no staging folder is left"


def test_a_folder_holding_other_files_is_refused_in_one_grammatical_sentence(tmp_path):
    """An analysis folder left inside an experiment folder (a train-fit table) stops `--resume`; the
    sentence names the entry and the kind of folder, with its article."""
    from moe_roma.experiments.comparison import RESULTS_FOLDER
    from moe_roma.io.outputs import guard_output

    out = tmp_path / "exp"
    (out / "train-fit").mkdir(parents=True)
    (out / "outcomes.jsonl").write_text("")
    with pytest.raises(RomaError) as refused:
        guard_output("--out", out, RESULTS_FOLDER, resume=True)
    assert "holds 'train-fit', which is not part of an experiment folder; refusing" in str(refused.value)
    assert sorted(p.name for p in out.iterdir()) == ["outcomes.jsonl", "train-fit"]


def test_a_staged_output_replaces_the_old_result_only_when_complete(tmp_path):
    from moe_roma.io.outputs import Kind, guard_output

    kind = Kind("report", members=("*.json",), finished=("report.json",))
    out = tmp_path / "r"
    out.mkdir()
    (out / "report.json").write_text("old")
    with pytest.raises(ValueError), guard_output("--out", out, kind, overwrite=True).staged() as tmp:
        (tmp / "report.json").write_text("new, half")
        raise ValueError("a failure on the way")
    assert (out / "report.json").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    output = guard_output("--out", out, kind, overwrite=True)
    with output.staged() as tmp:
        (tmp / "report.json").write_text("new")
        assert (out / "report.json").read_text() == "old"  # untouched until the block ends
    assert (out / "report.json").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    # A result written meanwhile by another process is not replaced: this run's is kept aside, complete.
    output = guard_output("--out", out, kind, overwrite=True)
    with pytest.raises(RomaError, match="changed by another process"), output.staged() as tmp:
        (tmp / "report.json").write_text("mine")
        out.rename(tmp_path / "moved")
        out.mkdir()
    assert sorted(p.name for p in out.iterdir()) == []


def test_a_refused_run_into_a_new_nested_folder_leaves_no_folder(w, tmp_path, capsys):
    out = tmp_path / "a" / "b" / "run"
    assert main(train(w, out, "--graph.embedder", str(tmp_path / "no-embedder"))) == 2
    assert not (tmp_path / "a").exists()


# --- no code from a model folder ---------------------------------------------------------------------


def test_every_load_tells_transformers_whether_a_folder_may_run_code(w, tmp_path, monkeypatch, capsys):
    """trust_remote_code is always passed: False unless --trust-remote-code, so transformers never asks."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    seen: list = []
    for cls in (AutoModelForCausalLM, AutoTokenizer):
        original = cls.from_pretrained

        def spy(*args, _original=original, **kwargs):
            seen.append(kwargs.get("trust_remote_code", "not passed"))
            if kwargs.get("trust_remote_code"):
                raise RuntimeError("stopped before any code of the folder could run")
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    args = [
        "eval",
        "--model",
        str(w / "model"),
        "--data",
        str(w / "train.jsonl"),
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main(args) == 0
    assert seen == [False, False]
    model = Path(shutil.copytree(w / "model", tmp_path / "model"))
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModelForCausalLM": "evil.Evil"}}))
    seen.clear()
    assert main(swap_model(args, model)) == 2 and seen == []  # refused before transformers is asked
    assert "--trust-remote-code" in capsys.readouterr().err
    assert main([*swap_model(args, model), "--trust-remote-code"]) == 2 and seen == [True]


def swap_model(args: list[str], model: Path) -> list[str]:
    return [str(model) if a.endswith("/model") else a for a in args]


# --- the new user's path ---------------------------------------------------------------------------------


def test_train_follows_the_routing_files_layers_and_collect_records_top_k(w, tmp_path):
    """Without --layers, roma train tunes the layers the routing file recorded (as it takes its scoring);
    the file records the model's top-k, for roma diagnose."""
    from moe_roma.routing.store import load_routing_store

    store = load_routing_store(w / "routing.json")
    assert store.layers == [2, 3] and store.meta["top_k"] == 2
    args = [a for a in train(w, tmp_path / "run") if a not in ("--layers", "last2")]
    assert main(args) == 0
    assert json.loads((tmp_path / "run" / "router_config.json").read_text())["tuned_layers"] == [2, 3]


# --- stops: SIGINT and SIGTERM ------------------------------------------------------------------------


def stop_at(monkeypatch, function: str, n: int, signum=signal.SIGINT, after: bool = True):
    """Raise the trainer's stop exception at the n-th call of ``moe_roma.methods.roma.trainer.<function>``
    (what the signal handler raises when a real signal lands there)."""
    import moe_roma.methods.roma.trainer as trainer_module
    from moe_roma.io.interrupts import Interrupted

    owner_name, _, name = function.rpartition(".")
    owner = getattr(trainer_module, owner_name) if owner_name else trainer_module
    original, calls = getattr(owner, name), [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n and not after:
            raise Interrupted(signum)
        result = original(*args, **kwargs)
        if calls[0] == n:
            raise Interrupted(signum)
        return result

    monkeypatch.setattr(owner, name, wrapped)


def test_a_stop_without_save_every_leaves_nothing(w, tmp_path, monkeypatch, capsys):
    stop_at(monkeypatch, "RouterTrainer.apply_step", 3, signal.SIGTERM)
    out = tmp_path / "run"
    assert main(train(w, out)) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "stopped by SIGTERM after 2 of 4 steps; nothing was kept" in err and err.count("\n") == 1
    assert not out.exists()


def test_a_stop_keeps_the_last_complete_state_and_says_how_to_resume(w, tmp_path, monkeypatch, capsys):
    straight = tmp_path / "straight"
    assert main(train(w, straight)) == 0
    out = tmp_path / "run"
    with monkeypatch.context() as mp:
        stop_at(mp, "RouterTrainer.apply_step", 3, signal.SIGINT)
        assert main(train(w, out, "--runtime.save-every", "1")) == 130
    err = capsys.readouterr().err
    assert f"the last complete state (step 2) is in {out / STATE_NAME}" in err and "--resume" in err
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl", "neighbours.safetensors", STATE_NAME]
    assert main(train(w, out, "--runtime.save-every", "1", "--resume")) == 0
    got, want = (
        load_file(out / "router_weights.safetensors"),
        load_file(straight / "router_weights.safetensors"),
    )
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_a_stop_inside_the_checkpoint_write_waits_for_it(w, tmp_path, monkeypatch, capsys):
    """A signal during the final write is held until both files are in place, so a folder never holds
    a config without its weights."""
    import moe_roma.models.checkpoint as checkpoint_module
    from moe_roma.io.interrupts import _handler

    original = checkpoint_module.file_sha256

    def signal_mid_write(path):
        _handler(signal.SIGINT, None)  # what the installed handler does when SIGINT lands here
        return original(path)

    monkeypatch.setattr(checkpoint_module, "file_sha256", signal_mid_write)
    out = tmp_path / "run"
    assert main(train(w, out, "--runtime.save-every", "1")) == 130
    assert "stopped by SIGINT as the run ended; its checkpoint in" in capsys.readouterr().err
    assert (out / "router_config.json").is_file() and (out / "router_weights.safetensors").is_file()
    monkeypatch.undo()
    load_router_checkpoint(out)  # whole, and its checksum agrees
    assert not (out / STATE_NAME).exists()


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_real_signals_stop_a_roma_train_process_cleanly(w, tmp_path, signame):
    """The real thing: a roma train process signals itself at its 3rd state save (no sleeps)."""
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        str(KILL_AT),
        "moe_roma.methods.roma.trainer:save_train_state",
        "3",
        "after",
        signame,
        "--",
        *train(w, out, "--runtime.save-every", "1"),
    ]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 128 + getattr(signal, signame), proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "the last complete state (step 3)" in proc.stderr and "--resume" in proc.stderr
    out2 = tmp_path / "plain"
    cmd = [
        sys.executable,
        str(KILL_AT),
        "moe_roma.methods.roma.trainer:_append_jsonl",
        "2",
        "after",
        signame,
        "--",
        *train(w, out2),
    ]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 128 + getattr(signal, signame) and "nothing was kept" in proc.stderr, (
        proc.stderr
    )
    assert not out2.exists()


# --- strict JSON and files people can read ------------------------------------------------------------


def test_metrics_are_strict_json_even_when_steps_are_skipped(tmp_path):
    model, tok, store, graph = store_and_graph(n=8)
    cfg = train_config(
        layers="last2",
        schedule={"epochs": 3, "batch_size": 4, "warmup_ratio": 0.0},
        optimizer={"lr": 1e30, "grad_clip": None},
        runtime={"max_nonfinite_steps": 100},
        graph={"dedupe_threshold": 1.01},
    )
    result = RouterTrainer(model, tok, store, cfg, tmp_path / "run", graph=graph, progress=False).train()
    assert result.skipped_steps > 0
    rows = strict_json_lines(tmp_path / "run" / "metrics.jsonl")
    assert any(r["router_grad_norm"] is None for r in rows), "a skipped step's NaN norm is written as null"
    json.loads((tmp_path / "run" / "router_config.json").read_text(), parse_constant=lambda c: 1 / 0)


def test_finite_json_and_checkpoint_config_never_fail_on_a_float(tmp_path):
    assert finite_json({"a": [float("inf"), 1.0], "b": float("nan")}) == {"a": [None, 1.0], "b": None}
    from moe_roma.models.checkpoint import save_router_checkpoint
    from moe_roma.models.discovery import discover_routers

    model, *_ = store_and_graph(n=4)
    save_router_checkpoint(
        model, discover_routers(model), [3], tmp_path / "r", finite_json({"loss": float("nan")})
    )
    assert load_router_checkpoint(tmp_path / "r")[0]["loss"] is None


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_get_the_users_umask(tmp_path, umask):
    from moe_roma.io.tensorfile import save_tensors

    old = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        save_tensors(tmp_path / "b.safetensors", {"t": torch.zeros(2)}, {})
    finally:
        os.umask(old)
    for name in ("a.json", "b.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_an_exported_model_is_readable_by_the_group(w, tmp_path):
    assert main(train(w, tmp_path / "roma")) == 0
    old = os.umask(0o022)
    try:
        assert (
            main(
                [
                    "export",
                    "--model",
                    str(w / "model"),
                    "--routers",
                    str(tmp_path / "roma"),
                    "--out",
                    str(tmp_path / "merged"),
                ]
            )
            == 0
        )
    finally:
        os.umask(old)
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "merged").iterdir()} == {0o644}


# --- the new user's path ---------------------------------------------------------------------------------


def test_template_escapes_are_read_as_documented_and_max_length_defaults_to_the_context(w, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "collect",
                "--model",
                str(w / "model"),
                "--data",
                str(w / "train.jsonl"),
                "--out",
                str(out),
                "--layers",
                "last2",
                "--no-progress",
                "--template",
                r"Question: {question}\n{choices}\nAnswer:",
            ]
        )
        == 0
    )
    entry = next(iter(json.loads(out.read_text()).values()))
    assert entry["input_text"].startswith("Question: ") and "\nA. " in entry["input_text"]
    assert "\\n" not in entry["input_text"]
    from moe_roma.models.loading import load_model
    from moe_roma.routing.store import load_routing_store
    from moe_roma.scoring.common import context_length

    meta = load_routing_store(out).meta
    assert (
        meta["max_length"] == context_length(*load_model(w / "model")) and meta["template"].count("\n") == 2
    )


def test_threads_default_to_half_the_cpus(w, tmp_path, monkeypatch):
    import moe_roma.commands as commands

    monkeypatch.setattr(commands, "default_threads", lambda: 1)
    assert commands.apply_threads(None) == 1 and torch.get_num_threads() == 1
    assert commands.apply_threads(2) == 2
    torch.set_num_threads(1)
    assert 1 <= commands.__dict__["default_threads"]() <= 8


def test_warnings_are_one_line_and_name_what_to_do(w, tmp_path, capsys):
    unknown = tmp_path / "words.jsonl"
    unknown.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"u{i}",
                    "question": f"zebra quokka {i} ?",
                    "choices": ["A) one", "B) two"],
                    "answer": "A",
                }
            )
            + "\n"
            for i in range(24)
        )
    )
    assert (
        main(
            [
                "eval",
                "--model",
                str(w / "model"),
                "--data",
                str(unknown),
                "--no-progress",
                "--max-length",
                "9999",
                "--scoring",
                "letter",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err.splitlines()
    assert any(
        line.startswith("roma eval: warning: --max-length 9999 is longer than the model's context (")
        for line in err
    )
    assert any("of the data's tokens are the tokenizer's unknown token <unk>" in line for line in err)
    assert any("at chance level" in line and "--scoring continuation" in line for line in err), err
    assert all(line.startswith("roma eval: warning: ") for line in err)


def test_k_larger_than_the_successful_set_is_clamped_with_a_warning(w, tmp_path, capsys):
    assert main(train(w, tmp_path / "run", "--graph.k", "50")) == 0
    err = capsys.readouterr().err
    assert "roma train: warning: k=50 is larger than the successful set allows" in err and "using k=" in err


def test_training_on_chance_level_routing_warns(w, tmp_path, capsys):
    entries = json.loads((w / "routing.json").read_text())
    many = {}
    for copy in range(3):
        for sid, entry in entries.items():
            entry = json.loads(json.dumps(entry))
            right = copy == 0 and sid in ("s0", "s1")
            n = len(entry["choices"])
            gold = "ABCD".index(entry["correct_answer"])
            entry["model_answer"] = entry["correct_answer"] if right else "ABCD"[(gold + 1) % n]
            entry["is_correct"] = right
            many[f"{sid}-{copy}"] = entry
    (tmp_path / "routing.json").write_text(json.dumps(many))
    args = train(w, tmp_path / "run", "--schedule.epochs", "1")
    args[args.index(str(w / "routing.json"))] = str(tmp_path / "routing.json")
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "roma train: warning: the routing file's base accuracy 8.3% is at chance level" in err
    assert "collect with --scoring continuation and train with scoring=continuation" in err


def test_a_stop_during_collect_leaves_no_routing_file(w, tmp_path, monkeypatch, capsys):
    import moe_roma.routing.store as store_module
    from moe_roma.io.interrupts import Interrupted

    def stopped(*args, **kwargs):
        raise Interrupted(signal.SIGTERM)  # lands while the side-car is written, after the JSON

    monkeypatch.setattr(store_module, "save_tensors", stopped)
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "collect",
                "--model",
                str(w / "model"),
                "--data",
                str(w / "train.jsonl"),
                "--out",
                str(out),
                "--layers",
                "last2",
                "--no-progress",
            ]
        )
        == 128 + signal.SIGTERM
    )
    assert "roma collect: stopped by SIGTERM before it finished" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_output_guard_module_examples_run():
    import doctest

    import moe_roma.io.outputs

    result = doctest.testmod(moe_roma.io.outputs)
    assert result.attempted > 0 and result.failed == 0


def test_an_outcomes_log_torn_by_an_interruption_reads_back_its_whole_records(tmp_path):
    from moe_roma.io.jsonl import read_records

    log = tmp_path / "outcomes.jsonl"
    assert read_records(log) == []  # no log yet: nothing done
    log.write_text('{"run": "base", "outcome": {}}\n[1, 2]\n{"run": "roma/seed0", "outc', encoding="utf-8")
    assert read_records(log) == [{"run": "base", "outcome": {}}]
