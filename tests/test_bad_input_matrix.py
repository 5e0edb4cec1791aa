"""A bad-input matrix across every command: each case is refused in one sentence and leaves nothing behind.

Every case runs ``roma ...`` in-process and checks the same contract: exit status 2; stderr is exactly
one non-empty line, with no traceback, naming the file (and the record, where there is one) and the
problem; and no output is left: the ``--out`` path does not exist afterwards (or, where it existed
before, is unchanged) and no ``.*.tmp`` file is left in its folder.

Most cases are written by hand, one per way an input can be wrong. Three families are generated:
every setting of every method's configuration (``TrainConfig`` through ``roma train key=value``,
``OracleConfig`` and ``C3POConfig`` through an experiment file) with each value it must refuse
(below and above its declared range, NaN, infinities, a fraction where an integer is due, a
word where a number or a boolean is due, a value that is not one of its choices); every count
option of every command (``--limit``, ``--batch-size``, ``--max-length``, ``--threads``) with 0,
a negative number and a word; and every way a training state can fail to fit the run that
resumes it.

Failures of the file system are simulated (the tests run as root, where ``chmod`` stops nothing): a
read-only folder by ``tempfile.mkstemp`` raising EACCES, a full disk by ``os.fsync`` raising ENOSPC
or by safetensors' ``save_file`` raising its own error for ENOSPC.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from safetensors import SafetensorError
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

from helpers.examples import make_examples, write_data
from helpers.tiny_models import build_tiny_tokenizer, save_tiny_model
from moe_roma.cli import main
from moe_roma.training.state import STATE_NAME

ENOSPC_SAFETENSORS = "Error while serializing: I/O error: No space left on device (os error 28)"


@dataclass
class Workspace:
    root: Path
    model: Path
    data: Path
    routing: Path
    routers: Path
    state_run: Path | None = None

    def routing_entry(self) -> dict:
        """A copy of one good sample of the routing file, to corrupt."""
        return json.loads(self.routing.read_text())["s0"]


def run(args, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("matrix")
    w = Workspace(root, root / "model", root / "train.jsonl", root / "routing.json", root / "roma")
    save_tiny_model(w.model, "olmoe", num_layers=4)
    write_data(w.data, make_examples(8))
    code = main(
        [
            "collect",
            "--model",
            str(w.model),
            "--data",
            str(w.data),
            "--out",
            str(w.routing),
            "--layers",
            "last2",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert code == 0
    code = main(
        [
            "train",
            "--model",
            str(w.model),
            "--routing",
            str(w.routing),
            "--out",
            str(w.routers),
            "--schedule.epochs",
            "1",
            "--schedule.batch-size",
            "4",
            "--layers",
            "last2",
            "--runtime.device",
            "cpu",
            "--no-progress",
            "graph.dedupe_threshold=1.01",
        ]
    )
    assert code == 0
    w.state_run = root / "stopped"
    stop_after_first_state(w)
    return w


def stop_after_first_state(w: Workspace) -> None:
    """A run into ``w.state_run`` stopped by SIGINT right after its first state (step 1 of 2): what a
    ``--resume`` would continue."""
    import signal

    import moe_roma.methods.roma.trainer as trainer_module
    from moe_roma.io.interrupts import Interrupted

    original = trainer_module.save_train_state

    def save_then_stop(*args, **kwargs):
        original(*args, **kwargs)
        raise Interrupted(signal.SIGINT)

    trainer_module.save_train_state = save_then_stop
    try:
        code = main([str(a) for a in train_args(w, w.routing, w.state_run, "--runtime.save-every", "1")])
    finally:
        trainer_module.save_train_state = original
    assert code == 130 and (w.state_run / STATE_NAME).is_file()


# --- the cases ------------------------------------------------------------------------------------
#
# A case builds its inputs under ``tmp`` and returns (argv, output path or None, needles for stderr).
# ``keep=True`` marks a case whose output path exists beforehand: it must be left exactly as it was.


@dataclass
class Case:
    build: Callable[[Workspace, Path, pytest.MonkeyPatch], tuple[list, Path | None, tuple[str, ...]]]
    keep: bool = False


CASES: dict[str, Case] = {}
HELD: list = []  # locks a case holds for the length of its run (another run's lock)


def case(name: str, keep: bool = False):
    def register(fn):
        assert name not in CASES, name
        CASES[name] = Case(fn, keep)
        return fn

    return register


def jsonl(path: Path, *records) -> Path:
    """Write records (dicts, or raw strings for lines that are not valid JSON) one per line."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def good(i: int, **change) -> dict:
    return {
        "id": f"q{i}",
        "question": f"what is {i} ?",
        "choices": ["A) one", "B) two"],
        "answer": "A",
        **change,
    }


def routing_file(path: Path, entries: dict) -> Path:
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def with_weights(entry: dict, layer: int, weights: dict) -> dict:
    entry = dict(entry)
    entry["last_token_routing"] = {
        **entry["last_token_routing"],
        "layers": [{"layer": layer, "routing_weights": weights}],
    }
    return entry


def swap(args: list, old, new) -> list:
    """``args`` with the argument ``old`` replaced by ``new``."""
    args[args.index(old)] = new
    return args


def copy_routers(ws: Workspace, dest: Path) -> Path:
    shutil.copytree(ws.routers, dest)
    return dest


def rehash(routers: Path) -> None:
    """Record the weight file's present SHA-256 in the config, as if the edit had been made by the writer."""
    from moe_roma.models.checkpoint import file_sha256

    cfg = json.loads((routers / "router_config.json").read_text())
    cfg["weights_sha256"] = file_sha256(routers / "router_weights.safetensors")
    (routers / "router_config.json").write_text(json.dumps(cfg))


def dense_model(path: Path) -> Path:
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=16,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    build_tiny_tokenizer().save_pretrained(path)
    return path


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def safetensors_no_space(*args, **kwargs):
    raise SafetensorError(ENOSPC_SAFETENSORS)


def read_only(*args, **kwargs):
    raise PermissionError(13, "Permission denied")


def train_args(ws: Workspace, routing: Path, out: Path, *extra) -> list:
    return [
        "train",
        "--model",
        ws.model,
        "--routing",
        routing,
        "--out",
        out,
        "--schedule.epochs",
        "1",
        "--schedule.batch-size",
        "4",
        "--layers",
        "last2",
        "--runtime.device",
        "cpu",
        "--no-progress",
        *extra,
        "graph.dedupe_threshold=1.01",
    ]


def collect_args(ws: Workspace, data: Path, out: Path, *extra) -> list:
    return [
        "collect",
        "--model",
        ws.model,
        "--data",
        data,
        "--out",
        out,
        "--layers",
        "last2",
        "--device",
        "cpu",
        "--no-progress",
        *extra,
    ]


def eval_args(ws: Workspace, data: Path, *extra) -> list:
    return ["eval", "--model", ws.model, "--data", data, "--device", "cpu", "--no-progress", *extra]


# roma data inspect: JSONL, TSV and CSV problems (it writes nothing).


@case("inspect-truncated-jsonl-line-3")
def _(ws, tmp, mp):
    bad = jsonl(tmp / "cut.jsonl", good(1), good(2), '{"id": "q3", "question": "what is 3 ?", "choi')
    return ["data", "inspect", bad], None, ("cut.jsonl", "line 3", "malformed or truncated JSON")


@case("inspect-empty-file")
def _(ws, tmp, mp):
    (tmp / "empty.jsonl").write_bytes(b"\n \n")
    return ["data", "inspect", tmp / "empty.jsonl"], None, ("empty.jsonl", "file is empty")


@case("inspect-binary-garbage")
def _(ws, tmp, mp):
    (tmp / "blob.jsonl").write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4)  # a gzip passed by mistake
    return ["data", "inspect", tmp / "blob.jsonl"], None, ("blob.jsonl", "line 1", "not UTF-8")


@case("inspect-lone-surrogate")
def _(ws, tmp, mp):
    bad = jsonl(
        tmp / "surrogate.jsonl", good(1), good(2, question="what is \ud800 ?")
    )  # json.dumps escapes it
    assert "\\ud800" in bad.read_text()
    return ["data", "inspect", bad], None, ("surrogate.jsonl", "line 2", "invalid character")


@case("inspect-wrong-type-choices")
def _(ws, tmp, mp):
    bad = jsonl(tmp / "types.jsonl", good(1), good(2, choices="A) one B) two"))
    return ["data", "inspect", bad], None, ("types.jsonl", "line 2", "'choices' must be a list of strings")


@case("inspect-one-choice")
def _(ws, tmp, mp):
    bad = jsonl(tmp / "one.jsonl", good(1, choices=["A) only"]))
    return ["data", "inspect", bad], None, ("one.jsonl", "line 1", "has 1 item", "at least 2")


@case("inspect-27-choices")
def _(ws, tmp, mp):
    bad = jsonl(tmp / "many.jsonl", {"query": "pick one", "choices": [f"c{i}" for i in range(27)], "gold": 0})
    return ["data", "inspect", bad], None, ("many.jsonl", "line 1", "27 items", "at most 26")


@case("inspect-nan-gold")
def _(ws, tmp, mp):
    bad = jsonl(
        tmp / "nan.jsonl",
        {"query": "2 + 2 =", "choices": ["3", "4"], "gold": 1},
        '{"query": "1 + 1 =", "choices": ["2", "3"], "gold": NaN}',
    )
    return ["data", "inspect", bad], None, ("nan.jsonl", "line 2", "NaN")


@case("inspect-duplicate-ids")
def _(ws, tmp, mp):
    bad = jsonl(tmp / "dup.jsonl", good(1), good(2), good(1))
    return ["data", "inspect", bad], None, ("dup.jsonl", "line 3", "duplicate id 'q1'", "line 1")


@case("inspect-missing-path")
def _(ws, tmp, mp):
    return ["data", "inspect", tmp / "absent.jsonl"], None, ("absent.jsonl", "no such file")


# roma collect: data, model and layer problems, and failed writes.


@case("collect-truncated-tsv-line-3")
def _(ws, tmp, mp):
    bad = tmp / "obqa.tsv"
    bad.write_text(
        "ID\tQuestion Stem\tChoices\tComplete Question\tAnswer Key\n"
        "7-1\twhat is red ?\t(A) a colour (B) a dog\twhat is red ? a colour\tA\n"
        "7-2\twhat is blue ?\t(A) a col",
        encoding="utf-8",
    )
    return (
        collect_args(ws, bad, tmp / "out" / "r.json"),
        tmp / "out" / "r.json",
        ("obqa.tsv", "line 3", "3 tab-separated fields"),
    )


@case("collect-missing-data")
def _(ws, tmp, mp):
    return (
        collect_args(ws, tmp / "nothing.jsonl", tmp / "r.json"),
        tmp / "r.json",
        ("nothing.jsonl", "no such file"),
    )


@case("collect-missing-model")
def _(ws, tmp, mp):
    args = swap(collect_args(ws, ws.data, tmp / "r.json"), ws.model, tmp / "no-model")
    return args, tmp / "r.json", ("no-model", "model path does not exist")


@case("collect-layer-not-moe")
def _(ws, tmp, mp):
    args = swap(collect_args(ws, ws.data, tmp / "r.json"), "last2", "2,7")
    return args, tmp / "r.json", ("7", "not MoE layers")


@case("collect-read-only-folder")
def _(ws, tmp, mp):
    mp.setattr("moe_roma.io.atomic.tempfile.mkstemp", read_only)
    out = tmp / "new" / "r.json"
    return collect_args(ws, ws.data, out), out, ("r.json", "Permission denied")


@case("collect-disk-full-json")
def _(ws, tmp, mp):
    mp.setattr("moe_roma.io.atomic.os.fsync", no_space)
    return collect_args(ws, ws.data, tmp / "r.json"), tmp / "r.json", ("r.json", "No space left on device")


@case("collect-disk-full-sidecar")
def _(ws, tmp, mp):
    mp.setattr("moe_roma.io.tensorfile.save_file", safetensors_no_space)
    return (
        collect_args(ws, ws.data, tmp / "r.json"),
        tmp / "r.json",
        ("r.safetensors", "(No space left on device)"),
    )


# roma train: broken routing files, routing of another model, settings, resume state, embedder, writes.


@case("train-truncated-routing-json")
def _(ws, tmp, mp):
    text = ws.routing.read_text()
    bad = tmp / "cut.json"
    bad.write_text(text[: len(text) // 2])
    return train_args(ws, bad, tmp / "t"), tmp / "t", ("cut.json", "line 1", "malformed JSON")


@case("train-empty-routing")
def _(ws, tmp, mp):
    (tmp / "empty.json").write_text("")
    return train_args(ws, tmp / "empty.json", tmp / "t"), tmp / "t", ("empty.json", "malformed JSON")


@case("train-binary-routing")
def _(ws, tmp, mp):
    (tmp / "blob.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" * 50)
    return train_args(ws, tmp / "blob.json", tmp / "t"), tmp / "t", ("blob.json", "not a UTF-8 text file")


@case("train-routing-weight-overflows-to-inf")
def _(ws, tmp, mp):
    entry = with_weights(ws.routing_entry(), 3, {"expert_0": 0.5, "expert_1": 0.5})
    bad = tmp / "inf.json"
    bad.write_text(json.dumps({"x": entry}).replace("0.5", "1e309", 1))
    return train_args(ws, bad, tmp / "t"), tmp / "t", ("inf.json", "id x", "finite", "inf")


@case("train-routing-wrong-type")
def _(ws, tmp, mp):
    bad = routing_file(
        tmp / "types.json", {"s0": ws.routing_entry(), "x": {**ws.routing_entry(), "is_correct": "yes"}}
    )
    return (
        train_args(ws, bad, tmp / "t"),
        tmp / "t",
        ("types.json", "id x", "'is_correct' must be true or false"),
    )


@case("train-routing-duplicate-ids")
def _(ws, tmp, mp):
    entry = json.dumps(ws.routing_entry())
    bad = tmp / "dup.json"
    bad.write_text("{" + ", ".join(f'"{sid}": {entry}' for sid in ("s0", "s1", "s0")) + "}")
    return train_args(ws, bad, tmp / "t"), tmp / "t", ("dup.json", "id s0", "duplicate id")


@case("train-routing-lone-surrogate")
def _(ws, tmp, mp):
    bad = routing_file(
        tmp / "surrogate.json", {"x": {**ws.routing_entry(), "input_text": "what is \ud800 ?"}}
    )
    assert "\\ud800" in bad.read_text()
    return train_args(ws, bad, tmp / "t"), tmp / "t", ("surrogate.json", "id x", "invalid character")


@case("train-routing-expert-of-another-model")
def _(ws, tmp, mp):
    entries = {"x": with_weights(ws.routing_entry(), 3, {"expert_0": 0.5, "expert_8": 0.5})}
    bad = routing_file(tmp / "other.json", entries)
    return train_args(ws, bad, tmp / "t"), tmp / "t", ("other.json", "9 experts", "has 8", "another model")


@case("train-routing-layer-not-moe")
def _(ws, tmp, mp):
    bad = routing_file(tmp / "layer.json", {"x": with_weights(ws.routing_entry(), 9, {"expert_0": 1.0})})
    return (
        train_args(ws, bad, tmp / "t"),
        tmp / "t",
        ("layer.json", "layers [9] are not MoE layers", "another model"),
    )


@case("train-missing-model")
def _(ws, tmp, mp):
    args = swap(train_args(ws, ws.routing, tmp / "t"), ws.model, tmp / "gone")
    return args, tmp / "t", ("gone", "model path does not exist")


@case("train-yaml-wrong-type")
def _(ws, tmp, mp):
    (tmp / "train.yaml").write_text("schedule: {epochs: three}\noptimizer: {lr: 0.01}\n")
    args = train_args(ws, ws.routing, tmp / "t", "--config", tmp / "train.yaml")
    args.remove("--schedule.epochs")
    args.remove("1")
    return args, tmp / "t", ("train.yaml", "'schedule.epochs'", "'three'")


@case("train-corrupted-resume-state", keep=True)
def _(ws, tmp, mp):
    (tmp / "t").mkdir()
    (tmp / "t" / STATE_NAME).write_bytes(b"\x00\x01garbage, not a safetensors header" * 7)
    return (
        train_args(ws, ws.routing, tmp / "t", "--resume"),
        tmp / "t",
        (STATE_NAME, "not a readable training state"),
    )


@case("train-embedder-does-not-exist")
def _(ws, tmp, mp):
    args = train_args(ws, ws.routing, tmp / "t", "--graph.embedder", "/nonexistent")
    return args, tmp / "t", ("/nonexistent", "sentence embedder folder does not exist")


@case("train-read-only-folder")
def _(ws, tmp, mp):
    mp.setattr("moe_roma.io.atomic.tempfile.mkstemp", read_only)
    return train_args(ws, ws.routing, tmp / "t"), tmp / "t", (str(tmp / "t"), "Permission denied")


@case("train-disk-full-router-checkpoint")
def _(ws, tmp, mp):
    mp.setattr("moe_roma.models.checkpoint.save_file", safetensors_no_space)
    return (
        train_args(ws, ws.routing, tmp / "t"),
        tmp / "t",
        ("router_weights.safetensors", "(No space left on device)"),
    )


@case("train-disk-full-router-config")
def _(ws, tmp, mp):
    mp.setattr("moe_roma.io.atomic.os.fsync", no_space)  # the weights are complete, the config is not
    return train_args(ws, ws.routing, tmp / "t"), tmp / "t", ("router_config.json", "No space left on device")


@case("train-disk-full-replacing-a-finished-run", keep=True)
def _(ws, tmp, mp):
    """--overwrite trains into a hidden staging folder; the disk fills at the checkpoint: the sentence
    names the run's own file (not the staging folder) and says the old run is kept, as it is."""
    out = Path(shutil.copytree(ws.routers, tmp / "t"))
    mp.setattr("moe_roma.models.checkpoint.save_file", safetensors_no_space)
    return (
        train_args(ws, ws.routing, out, "--overwrite"),
        out,
        (
            f"{out}/router_weights.safetensors",
            "(No space left on device)",
            f"the old result in {out} is kept",
        ),
    )


# roma apply and roma export: checkpoints and models that do not fit, and failed writes.


@case("apply-dense-model")
def _(ws, tmp, mp):
    dense = dense_model(tmp / "dense")
    return (
        ["apply", "--model", dense, "--routers", ws.routers],
        None,
        (f"{dense}: no MoE routers found in LlamaForCausalLM",),
    )


@case("apply-garbage-router-weights")
def _(ws, tmp, mp):
    routers = copy_routers(ws, tmp / "roma")
    (routers / "router_weights.safetensors").write_bytes(b"\xde\xad\xbe\xef" * 64)
    return (
        ["apply", "--model", ws.model, "--routers", routers],
        None,
        ("router_weights.safetensors", "does not match the SHA-256"),
    )


@case("apply-garbage-router-weights-with-their-checksum")
def _(ws, tmp, mp):
    routers = copy_routers(ws, tmp / "roma")
    (routers / "router_weights.safetensors").write_bytes(b"\xde\xad\xbe\xef" * 64)
    rehash(routers)  # the checksum agrees: the file itself must still be refused
    return (
        ["apply", "--model", ws.model, "--routers", routers],
        None,
        ("router_weights.safetensors", "not a readable safetensors file"),
    )


@case("apply-truncated-router-config")
def _(ws, tmp, mp):
    routers = copy_routers(ws, tmp / "roma")
    text = (routers / "router_config.json").read_text()
    (routers / "router_config.json").write_text(text[:40])
    return (
        ["apply", "--model", ws.model, "--routers", routers],
        None,
        ("router_config.json", "malformed JSON"),
    )


@case("export-into-non-empty-folder", keep=True)
def _(ws, tmp, mp):
    (tmp / "merged").mkdir()
    (tmp / "merged" / "notes.txt").write_text("mine\n")
    args = ["export", "--model", ws.model, "--routers", ws.routers, "--out", tmp / "merged"]
    return args, tmp / "merged", ("merged", "holds 'notes.txt'", "not part of a merged model")


@case("export-disk-full")
def _(ws, tmp, mp):
    mp.setattr("transformers.modeling_utils.safe_save_file", safetensors_no_space)
    args = ["export", "--model", ws.model, "--routers", ws.routers, "--out", tmp / "merged"]
    return args, tmp / "merged", ("merged", "No space left on device")


@case("export-missing-routers")
def _(ws, tmp, mp):
    args = ["export", "--model", ws.model, "--routers", tmp / "no-roma", "--out", tmp / "merged"]
    return args, tmp / "merged", ("no-roma", "router checkpoint folder does not exist")


# roma eval: CSV data, non-finite routers, and reports that cannot be written.


@case("eval-csv-row-2-wrong-width")
def _(ws, tmp, mp):
    bad = tmp / "algebra_test.csv"
    bad.write_text("what is one ?,one,two,three,four,A\nwhat is two ?,one,two,B\n", encoding="utf-8")
    args = eval_args(ws, bad, "--json", tmp / "report.json")
    return args, tmp / "report.json", ("algebra_test.csv", "row 2", "has 4 fields but row 1 has 6")


@case("eval-nan-router-weights")
def _(ws, tmp, mp):
    routers = copy_routers(ws, tmp / "roma")
    from safetensors.torch import load_file

    tensors = load_file(routers / "router_weights.safetensors")
    name = sorted(tensors)[0]
    tensors[name][0, 0] = float("nan")
    save_file(tensors, routers / "router_weights.safetensors")
    rehash(routers)
    args = eval_args(ws, ws.data, "--routers", routers, "--json", tmp / "report.json")
    return args, tmp / "report.json", ("router_weights.safetensors", f"tensor {name}", "NaN")


@case("eval-disk-full-report")
def _(ws, tmp, mp):
    mp.setattr("moe_roma.io.atomic.os.fsync", no_space)
    args = eval_args(ws, ws.data, "--json", tmp / "report.json", "--predictions", tmp / "pred.jsonl")
    return args, tmp / "report.json", ("report.json", "No space left on device")


@case("eval-read-only-predictions")
def _(ws, tmp, mp):
    # The report itself can be written, only the predictions cannot: both or neither.
    mkstemp = tempfile.mkstemp

    def selective(*args, **kwargs):
        if kwargs.get("prefix", "").startswith(".pred"):
            read_only()
        return mkstemp(*args, **kwargs)

    mp.setattr("moe_roma.io.atomic.tempfile.mkstemp", selective)
    args = eval_args(ws, ws.data, "--json", tmp / "report.json", "--predictions", tmp / "pred.jsonl")
    return args, tmp / "report.json", ("pred.jsonl", "Permission denied")


# roma lm-eval-task: data problems and a folder that cannot be written.


@case("lm-eval-task-unterminated-csv-quote")
def _(ws, tmp, mp):
    bad = tmp / "quote_test.csv"
    bad.write_text('what is one ?,one,two,A\n"what is two ?,one,two,B\n', encoding="utf-8")
    return (
        ["lm-eval-task", "--data", bad, "--out", tmp / "task"],
        tmp / "task",
        ("quote_test.csv", "row 2", "malformed CSV"),
    )


@case("lm-eval-task-huge-gold")
def _(ws, tmp, mp):
    bad = jsonl(tmp / "huge.jsonl", {"query": "2 + 2 =", "choices": ["3", "4"], "gold": 1e300})
    return (
        ["lm-eval-task", "--data", bad, "--out", tmp / "task"],
        tmp / "task",
        ("huge.jsonl", "line 1", "'gold' is 10000", "...", "2 choices"),
    )


@case("lm-eval-task-read-only-folder")
def _(ws, tmp, mp):
    mp.setattr("moe_roma.io.atomic.tempfile.mkstemp", read_only)
    return (
        ["lm-eval-task", "--data", ws.data, "--out", tmp / "task"],
        tmp / "task",
        ("task", "Permission denied"),
    )


# roma experiment: YAML problems, and bad data named in it.


@case("experiment-seeds-wrong-type")
def _(ws, tmp, mp):
    (tmp / "exp.yaml").write_text('seeds: "x"\nmethods: [{name: base, kind: base}]\ndata: {testbed: true}\n')
    return (
        ["experiment", tmp / "exp.yaml", "--out", tmp / "exp"],
        tmp / "exp",
        ("exp.yaml", "'seeds' must be a list of integers", "'x'"),
    )


@case("experiment-truncated-yaml")
def _(ws, tmp, mp):
    (tmp / "exp.yaml").write_text("name: cut\nmethods: [{name: base, kind: base}\ndata: {testbed: tr")
    return (
        ["experiment", tmp / "exp.yaml", "--out", tmp / "exp"],
        tmp / "exp",
        ("exp.yaml", "line", "malformed YAML"),
    )


@case("experiment-bad-eval-data")
def _(ws, tmp, mp):
    bad = jsonl(tmp / "dev.jsonl", good(1), good(2, answer="E"))
    (tmp / "exp.yaml").write_text(
        json.dumps(
            {
                "methods": [{"name": "base", "kind": "base"}],
                "seeds": [0],
                "data": {"model": str(ws.model), "train": str(ws.data), "eval": {"dev": str(bad)}},
            }
        )
    )
    return (
        ["experiment", tmp / "exp.yaml", "--out", tmp / "exp"],
        tmp / "exp",
        ("dev.jsonl", "line 2", "'answer'", "only 2 choices"),
    )


# --- inputs are sacred: an output never replaces an input ----------------------------------------


@case("collect-out-is-the-data", keep=True)
def _(ws, tmp, mp):
    data = Path(shutil.copy(ws.data, tmp / "train.jsonl"))
    return collect_args(ws, data, data), data, ("--out", "is the input --data", "train.jsonl")


@case("collect-out-is-a-symlink-to-the-data")
def _(ws, tmp, mp):
    data = Path(shutil.copy(ws.data, tmp / "train.jsonl"))
    (tmp / "alias.jsonl").symlink_to(data)
    return collect_args(ws, tmp / "alias.jsonl", data), None, ("is the input --data", "alias.jsonl")


@case("collect-out-is-a-hard-link-to-the-data")
def _(ws, tmp, mp):
    data = Path(shutil.copy(ws.data, tmp / "train.jsonl"))
    (tmp / "twin.jsonl").hardlink_to(data)
    return collect_args(ws, data, tmp / "twin.jsonl"), None, ("--out", "twin.jsonl", "is the input --data")


@case("collect-out-through-a-symlinked-folder")
def _(ws, tmp, mp):
    (tmp / "real").mkdir()
    data = Path(shutil.copy(ws.data, tmp / "real" / "train.jsonl"))
    (tmp / "alias").symlink_to(tmp / "real")
    return collect_args(ws, data, tmp / "alias" / "train.jsonl"), None, ("is the input --data",)


@case("collect-sidecar-would-replace-the-data")
def _(ws, tmp, mp):
    data = Path(shutil.copy(ws.data, tmp / "r.safetensors"))
    return (
        collect_args(ws, data, tmp / "r.json", "--format", "roma-jsonl"),
        None,
        ("r.safetensors", "is the input --data"),
    )


@case("collect-out-replaces-a-model-file")
def _(ws, tmp, mp):
    model = Path(shutil.copytree(ws.model, tmp / "model"))
    args = swap(collect_args(ws, ws.data, model / "config.json"), ws.model, model)
    return args, None, ("config.json", "would replace a file of the input --model")


@case("eval-json-is-the-data", keep=True)
def _(ws, tmp, mp):
    data = Path(shutil.copy(ws.data, tmp / "d.jsonl"))
    return eval_args(ws, data, "--json", data), data, ("--json", "is the input --data", "d.jsonl")


@case("eval-predictions-is-the-data", keep=True)
def _(ws, tmp, mp):
    data = Path(shutil.copy(ws.data, tmp / "d.jsonl"))
    return eval_args(ws, data, "--predictions", data), data, ("--predictions", "is the input --data")


@case("eval-json-and-predictions-are-one-file")
def _(ws, tmp, mp):
    out = tmp / "both.json"
    return (
        eval_args(ws, ws.data, "--json", out, "--predictions", out),
        out,
        ("--json and --predictions", "same file"),
    )


@case("eval-json-into-the-router-folder")
def _(ws, tmp, mp):
    routers = copy_routers(ws, tmp / "roma")
    args = eval_args(ws, ws.data, "--routers", routers, "--json", routers / "router_config.json")
    return args, None, ("router_config.json", "would replace a file of the input --routers")


@case("lm-eval-task-over-its-own-data", keep=True)
def _(ws, tmp, mp):
    (tmp / "task").mkdir()
    data = Path(shutil.copy(ws.data, tmp / "task" / "mine.jsonl"))
    args = ["lm-eval-task", "--data", data, "--out", tmp / "task", "--name", "mine"]
    return args, tmp / "task", ("mine.jsonl", "is the input --data")


@case("export-out-is-the-router-folder", keep=True)
def _(ws, tmp, mp):
    routers = copy_routers(ws, tmp / "roma")
    return (
        ["export", "--model", ws.model, "--routers", routers, "--out", routers],
        routers,
        ("is the input --routers",),
    )


@case("train-out-is-the-routing-file", keep=True)
def _(ws, tmp, mp):
    routing = Path(shutil.copy(ws.routing, tmp / "routing.json"))
    return train_args(ws, routing, routing), routing, ("--out", "is the input --routing")


@case("train-routing-inside-out-under-an-output-name", keep=True)
def _(ws, tmp, mp):
    (tmp / "t").mkdir()
    routing = Path(shutil.copy(ws.routing, tmp / "t" / "metrics.jsonl"))
    return train_args(ws, routing, tmp / "t"), tmp / "t", ("metrics.jsonl", "is the input --routing")


@case("train-finished-run-is-not-retrained", keep=True)
def _(ws, tmp, mp):
    out = copy_routers(ws, tmp / "t")
    return train_args(ws, ws.routing, out), out, ("already holds a finished run", "--overwrite")


@case("train-resume-of-a-finished-run", keep=True)
def _(ws, tmp, mp):
    out = copy_routers(ws, tmp / "t")
    return train_args(ws, ws.routing, out, "--resume"), out, ("finished run", "nothing to resume")


@case("train-resumable-state-is-not-restarted", keep=True)
def _(ws, tmp, mp):
    out = Path(shutil.copytree(ws.state_run, tmp / "t"))
    return (
        train_args(ws, ws.routing, out, "--runtime.save-every", "1"),
        out,
        ("resumable state at step 1", "--resume"),
    )


@case("train-resume-and-overwrite-together")
def _(ws, tmp, mp):
    return (
        train_args(ws, ws.routing, tmp / "t", "--resume", "--overwrite"),
        tmp / "t",
        ("--resume and --overwrite",),
    )


@case("train-out-is-locked-by-another-run", keep=True)
def _(ws, tmp, mp):
    from moe_roma.io.lock import FolderLock

    (tmp / "t").mkdir()
    lock = FolderLock(tmp / "t", "roma train")
    lock.acquire()
    HELD.append(lock)
    return (
        train_args(ws, ws.routing, tmp / "t"),
        tmp / "t",
        ("in use by process", str(os.getpid()), ".roma.lock"),
    )


@case("train-out-is-a-project-folder", keep=True)
def _(ws, tmp, mp):
    (tmp / "project").mkdir()
    (tmp / "project" / "README.md").write_text("# my project\n")
    (tmp / "project" / "pyproject.toml").write_text("[project]\n")
    return (
        train_args(ws, ws.routing, tmp / "project"),
        tmp / "project",
        ("holds 'README.md'", "not part of a run"),
    )


@case("train-out-holds-only-a-readme", keep=True)
def _(ws, tmp, mp):
    (tmp / "t").mkdir()
    (tmp / "t" / "README.md").write_text("# notes\n")  # a README.md without a run is the user's, not a card
    return train_args(ws, ws.routing, tmp / "t"), tmp / "t", ("holds 'README.md'", "not part of a run")


@case("testbed-build-without-out-would-replace-the-bundled-model")
def _(ws, tmp, mp):
    return (
        ["testbed", "build", "--steps", "1"],
        None,
        ("bundled downstream model", "--out DIR", "--overwrite"),
    )


@case("experiment-name-leaves-the-results-folder")
def _(ws, tmp, mp):
    (tmp / "exp.yaml").write_text(
        "name: ../../escape\nmethods: [{name: base, kind: base}]\ndata: {testbed: true}\n"
    )
    return ["experiment", tmp / "exp.yaml"], None, ("exp.yaml", "'name' '../../escape'", "not a plain name")


@case("experiment-method-name-leaves-the-results-folder")
def _(ws, tmp, mp):
    data = {"model": str(ws.model), "train": str(ws.data), "eval": {"dev": str(ws.data)}}
    (tmp / "exp.yaml").write_text(
        json.dumps({"methods": [{"name": "../../x", "kind": "base"}], "data": data})
    )
    return (
        ["experiment", tmp / "exp.yaml", "--out", tmp / "exp"],
        tmp / "exp",
        ("exp.yaml", "method name", "not a plain name"),
    )


@case("experiment-unfinished-grid-is-not-restarted", keep=True)
def _(ws, tmp, mp):
    (tmp / "exp").mkdir()
    (tmp / "exp" / "outcomes.jsonl").write_text('{"key": "k", "outcome": {}}\n')
    args = ["experiment", _experiment_file(tmp), "--out", tmp / "exp"]
    return args, tmp / "exp", ("unfinished experiment folder", "outcomes.jsonl", "--resume", "--overwrite")


@case("experiment-resume-and-overwrite-together")
def _(ws, tmp, mp):
    args = ["experiment", _experiment_file(tmp), "--out", tmp / "exp", "--resume", "--overwrite"]
    return args, tmp / "exp", ("--resume and --overwrite",)


@case("diagnose-out-would-replace-its-routing-file", keep=True)
def _(ws, tmp, mp):
    (tmp / "d").mkdir()
    routing = Path(shutil.copy(ws.routing, tmp / "d" / "report.json"))
    return (
        ["diagnose", "--routing", routing, "--out", tmp / "d"],
        tmp / "d",
        ("--routing", "report.json", "is inside the output folder"),
    )


# --- a card shows only its own routers' true figures -----------------------------------------------


def eval_report(ws: Workspace, path: Path, text: str | None = None, **change) -> Path:
    """An eval report of the workspace's routers (their fingerprint), with ``change``; or ``text`` as is."""
    sha = json.loads((ws.routers / "router_config.json").read_text())["weights_sha256"]
    report = {"data": str(ws.data), "scoring": "continuation", "n": 8, "acc": 0.5, "acc_norm": 0.5}
    report.update({"routers": str(ws.routers), "routers_sha256": sha, "evaluated": "tuned", **change})
    path.write_text(text if text is not None else json.dumps(report))
    return path


def card_case(name: str, build_report, needles: tuple[str, ...], command: str = "card"):
    @case(f"{command}-{name}", keep=command == "card")
    def _(ws, tmp, mp):
        report = build_report(ws, tmp / "eval.json")
        if command == "card":
            routers = copy_routers(ws, tmp / "roma")
            return (
                ["card", "--routers", routers, "--eval-json", report],
                routers / "README.md",
                ("eval.json", *needles),
            )
        args = [
            "export",
            "--model",
            ws.model,
            "--routers",
            ws.routers,
            "--out",
            tmp / "merged",
            "--eval-json",
            report,
        ]
        return args, tmp / "merged", ("eval.json", *needles)


for _command in ("card", "export"):
    card_case(
        "eval-report-of-other-routers",
        lambda ws, p: eval_report(ws, p, routers_sha256="0" * 64),
        ("evaluated other routers", "a card shows only its own"),
        _command,
    )
    card_case(
        "eval-report-of-the-base-model",
        lambda ws, p: eval_report(ws, p, routers=None, routers_sha256=None, evaluated="base"),
        ("an evaluation of the base model",),
        _command,
    )
    card_case(
        "eval-report-nan-accuracy",
        lambda ws, p: eval_report(
            ws, p, text=eval_report(ws, p).read_text().replace('"acc": 0.5', '"acc": NaN')
        ),
        ("NaN", "only finite figures"),
        _command,
    )
card_case(
    "eval-report-accuracy-above-one",
    lambda ws, p: eval_report(ws, p, acc=1.7),
    ("'acc'", "1.7", "between 0 and 1"),
)


def _infinite_task_accuracy(ws: Workspace, path: Path) -> Path:
    text = eval_report(ws, path, tasks={"t0": {"acc": 0.25}}).read_text()
    return eval_report(ws, path, text=text.replace("0.25", "Infinity"))


card_case("eval-report-task-accuracy-infinite", _infinite_task_accuracy, ("Infinity",))


# --- the routing side-car: numbers that cannot be routing are refused where they enter -------------


def sidecar_case(label: str, command: str, edit, needles: tuple[str, ...]):
    """A copy of the routing file whose side-car tensor ``edit`` changed, its own checksum recomputed (as
    a tool that rewrote it would): the side-car matches the JSON, but its numbers cannot be routing."""

    @case(f"{command}-sidecar-{label}")
    def _(ws, tmp, mp):
        from moe_roma.io.tensorfile import load_tensors, save_tensors
        from moe_roma.routing.store import sidecar_path, tensors_sha256

        routing = Path(shutil.copy(ws.routing, tmp / "r.json"))
        meta, tensors = load_tensors(sidecar_path(ws.routing), "side-car")
        edit(tensors["routing"])
        meta["tensors_sha256"] = tensors_sha256(tensors)
        save_tensors(sidecar_path(routing), tensors, meta)
        if command == "train":
            return train_args(ws, routing, tmp / "t"), tmp / "t", ("r.safetensors", "id s0", *needles)
        return (
            ["diagnose", "--routing", routing, "--out", tmp / "d"],
            tmp / "d",
            ("r.safetensors", "id s0", *needles),
        )


@case("collect-model-routes-to-nan")
def _(ws, tmp, mp):
    from safetensors.torch import load_file

    model = Path(shutil.copytree(ws.model, tmp / "model"))
    weights = load_file(model / "model.safetensors")
    gate = sorted(k for k in weights if k.endswith("mlp.gate.weight"))[-1]
    weights[gate][0, 0] = float("nan")  # the last MoE layer's router: NaN logits, NaN routing
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    args = swap(collect_args(ws, ws.data, tmp / "r.json"), ws.model, model)
    return args, tmp / "r.json", ("r.json", "the collected routing", "not finite")


for _command in ("train", "diagnose"):
    sidecar_case("nan-routing", _command, lambda r: r[0, 0, 0].fill_(float("nan")), ("not finite", "nan"))
    sidecar_case("negative-routing", _command, lambda r: r[0, 1, 2].fill_(-0.5), ("negative", "-0.5"))
    sidecar_case("zero-routing", _command, lambda r: r[0, 0].zero_(), ("all zero",))
sidecar_case("inf-routing", "train", lambda r: r[0, 0, 3].fill_(float("inf")), ("not finite", "inf"))


# --- diagnose follows the routing file's top-k, and refuses one that cannot be -------------------------


def recorded_top_k(ws: Workspace, tmp: Path, top_k) -> Path:
    """A copy of the routing file whose side-car records ``top_k`` (its tensors and content unchanged)."""
    from moe_roma.io.tensorfile import load_tensors, save_tensors
    from moe_roma.routing.store import sidecar_path

    routing = Path(shutil.copy(ws.routing, tmp / "r.json"))
    meta, tensors = load_tensors(sidecar_path(ws.routing), "side-car")
    save_tensors(sidecar_path(routing), tensors, {**meta, "top_k": top_k})
    return routing


@case("diagnose-top-k-above-the-experts")
def _(ws, tmp, mp):
    args = ["diagnose", "--routing", ws.routing, "--out", tmp / "d", "--top-k", "99"]
    return args, tmp / "d", ("--top-k 99", "from 1 to the", "experts", Path(ws.routing).name)


@case("diagnose-sidecar-top-k-not-a-number")
def _(ws, tmp, mp):
    args = ["diagnose", "--routing", recorded_top_k(ws, tmp, "four"), "--out", tmp / "d"]
    return args, tmp / "d", ("r.json", "records top_k 'four'", "--top-k K")


@case("diagnose-sidecar-top-k-above-the-experts")
def _(ws, tmp, mp):
    args = ["diagnose", "--routing", recorded_top_k(ws, tmp, 10**6), "--out", tmp / "d"]
    return args, tmp / "d", ("r.json", "records top_k 1000000", "experts")


@case("diagnose-model-disagrees-with-the-recorded-top-k")
def _(ws, tmp, mp):
    from moe_roma.routing.store import load_routing_store

    other = load_routing_store(ws.routing).meta["top_k"] + 1
    routing = recorded_top_k(ws, tmp, other)
    args = ["diagnose", "--routing", routing, "--out", tmp / "d", "--model", ws.model]
    return (
        args,
        tmp / "d",
        ("r.json", f"records top_k {other}", "is it the model the routing was collected from"),
    )


# --- resume checks what it resumes ----------------------------------------------------------------


def state_case(name: str, edit, needles: tuple[str, ...], *extra: str, rehash: bool = True):
    """A copy of the stopped run whose state ``edit(meta, tensors, ws, tmp)`` changed, run with --resume."""

    @case(f"resume-{name}", keep=True)
    def _(ws, tmp, mp):
        from moe_roma.io.tensorfile import load_tensors, save_tensors
        from moe_roma.training.state import state_sha256

        out = Path(shutil.copytree(ws.state_run, tmp / "t"))
        args = train_args(ws, ws.routing, out, "--resume", "--runtime.save-every", "1", *extra)
        if edit is not None:
            meta, tensors = load_tensors(out / STATE_NAME, "state")
            replaced = edit(meta, tensors, ws, tmp, args)
            if isinstance(replaced, bytes):  # the file itself, as the edit wants it
                (out / STATE_NAME).write_bytes(replaced)
            else:
                if rehash:
                    meta["sha256"] = state_sha256(meta, tensors)
                save_tensors(out / STATE_NAME, tensors, meta)
        return args, out, (STATE_NAME, *needles)


def other_routing(meta, tensors, ws, tmp, args):
    entries = json.loads(ws.routing.read_text())
    first = entries["s0"]["last_token_routing"]["layers"][0]["routing_weights"]
    first["expert_0"] = first["expert_0"] + 0.01
    routing_file(tmp / "other.json", entries)
    args[args.index(ws.routing)] = tmp / "other.json"


def other_model(meta, tensors, ws, tmp, args):
    save_tiny_model(tmp / "other-model", "olmoe", num_layers=4, seed=1)  # same shapes, other weights
    args[args.index(ws.model)] = tmp / "other-model"


def first_param(tensors) -> str:
    return sorted(k for k in tensors if k.startswith("param/"))[0]


state_case("with-another-routing-file", other_routing, ("another routing file", "routing_sha256"))
state_case("with-another-base-model", other_model, ("another base model", "base_model.routers_sha256"))
state_case(
    "with-another-learning-rate",
    None,
    ("other training settings", "setting optimizer.lr", "0.5"),
    "--optimizer.lr",
    "0.5",
)
state_case("with-another-regularizer", None, ("setting regularizer.name", "'l2'"), "--regularizer.name", "l2")
state_case(
    "step-past-the-end", lambda m, t, *_: m.update(step=7), ("at step 7", "outside this run's steps 1 to 1")
)
state_case("negative-step", lambda m, t, *_: m.update(step=-3), ("at step -3", "outside"))
state_case("step-not-an-integer", lambda m, t, *_: m.update(step="1"), ("lacks its step", "'1'"))
state_case("skipped-past-step", lambda m, t, *_: m.update(skipped=4), ("4", "skipped steps"))
state_case("missing-rng-tensor", lambda m, t, *_: t.pop("rng/torch"), ("lacks tensor rng/torch",))
state_case("missing-router-tensor", lambda m, t, *_: t.pop(first_param(t)), ("lacks tensor param/",))
state_case(
    "stray-tensor",
    lambda m, t, *_: t.update({"param/extra": t[first_param(t)].clone()}),
    ("holds tensor param/extra",),
)
state_case(
    "wrong-shape",
    lambda m, t, *_: t.update({first_param(t): t[first_param(t)][:, :3].contiguous()}),
    ("has shape", "the model's is"),
)
state_case("nan-weights", lambda m, t, *_: t[first_param(t)].fill_(float("nan")), ("NaN",))
state_case("another-format", lambda m, t, *_: m.update(format_version=1), ("another format", "--overwrite"))
state_case(
    "edited-tensors",
    lambda m, t, *_: t[first_param(t)].add_(1.0),
    ("edited or damaged", "SHA-256"),
    rehash=False,
)
state_case(
    "edited-step-without-checksum", lambda m, t, *_: m.update(step=0), ("edited or damaged",), rehash=False
)
state_case(
    "truncated",
    lambda m, t, ws, tmp, args: (ws.state_run / STATE_NAME).read_bytes()[:4000],
    ("not a readable training state",),
)


# --- checkpoints and models check themselves ------------------------------------------------------


def edited_router_config(name: str, change, needles: tuple[str, ...], command: str = "apply"):
    @case(f"{command}-router-config-{name}")
    def _(ws, tmp, mp):
        routers = copy_routers(ws, tmp / "roma")
        cfg = json.loads((routers / "router_config.json").read_text())
        change(cfg)
        (routers / "router_config.json").write_text(json.dumps(cfg))
        if command == "apply":
            return ["apply", "--model", ws.model, "--routers", routers], None, needles
        args = eval_args(ws, ws.data, "--routers", routers, "--json", tmp / "r.json")
        return args, tmp / "r.json", needles


edited_router_config(
    "layers-of-another-model",
    lambda c: c.update(tuned_layers=[0, 1]),
    ("lacks tensor", "'tuned_layers' are [0, 1]"),
)
edited_router_config(
    "layer-past-the-model", lambda c: c.update(tuned_layers=[2, 3, 9]), ("tuned layers [9]",)
)
edited_router_config("layer-twice", lambda c: c.update(tuned_layers=[2, 2]), ("lists a layer twice",))
edited_router_config(
    "no-layers", lambda c: c.update(tuned_layers=[]), ("'tuned_layers' must be a non-empty list",)
)
edited_router_config("expert-count", lambda c: c.update(num_experts=16), ("16", "experts", "has 8"))
edited_router_config(
    "expert-count-not-a-number", lambda c: c.update(num_experts="8"), ("'num_experts'", "'8'")
)
edited_router_config(
    "parameter-names",
    lambda c: c.update(parameter_names=["model.layers.0.mlp.gate.weight"]),
    ("'parameter_names' disagree",),
)
edited_router_config("checksum-missing", lambda c: c.pop("weights_sha256"), ("lacks 'weights_sha256'",))
edited_router_config(
    "checksum-of-another-file", lambda c: c.update(weights_sha256="0" * 64), ("does not match the SHA-256",)
)
edited_router_config(
    "nan-in-json", lambda c: c.update(seed=float("nan")), ("malformed JSON", "NaN"), command="eval"
)


@case("apply-torn-router-weights")
def _(ws, tmp, mp):
    routers = copy_routers(ws, tmp / "roma")
    data = (routers / "router_weights.safetensors").read_bytes()
    (routers / "router_weights.safetensors").write_bytes(data[: len(data) // 2])
    return (
        ["apply", "--model", ws.model, "--routers", routers],
        None,
        ("router_weights.safetensors", "SHA-256"),
    )


@case("eval-model-weights-truncated")
def _(ws, tmp, mp):
    model = Path(shutil.copytree(ws.model, tmp / "model"))
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) // 2])
    args = swap(eval_args(ws, ws.data, "--json", tmp / "r.json"), ws.model, model)
    return args, tmp / "r.json", (str(model), "cannot load a causal LM", "damaged or truncated")


@case("collect-model-config-expert-count-edited")
def _(ws, tmp, mp):
    model = Path(shutil.copytree(ws.model, tmp / "model"))
    cfg = json.loads((model / "config.json").read_text())
    cfg["num_experts"] = cfg["num_experts"] * 2
    (model / "config.json").write_text(json.dumps(cfg))
    args = swap(collect_args(ws, ws.data, tmp / "r.json"), ws.model, model)
    return args, tmp / "r.json", (str(model), "disagree with its config.json", "number of experts")


@case("collect-model-config-json-garbage")
def _(ws, tmp, mp):
    model = Path(shutil.copytree(ws.model, tmp / "model"))
    (model / "config.json").write_text('{"model_type": "olmoe", "num_hidden_layers": ')
    args = swap(collect_args(ws, ws.data, tmp / "r.json"), ws.model, model)
    return args, tmp / "r.json", (str(model), "cannot load")


@case("collect-device-cuda-without-a-gpu")
def _(ws, tmp, mp):
    mp.setattr("torch.cuda.is_available", lambda: False)
    args = swap(collect_args(ws, ws.data, tmp / "r.json"), "cpu", "cuda")
    return args, tmp / "r.json", ("'cuda'", "no GPU", "--device cpu")


@case("eval-device-gibberish")
def _(ws, tmp, mp):
    args = swap(eval_args(ws, ws.data, "--json", tmp / "r.json"), "cpu", "quantum")
    return args, tmp / "r.json", ("unknown device 'quantum'",)


# --- settings, templates and files that are not what they seem ------------------------------------


@case("train-layers-past-the-model")
def _(ws, tmp, mp):
    args = swap(train_args(ws, ws.routing, tmp / "t"), "last2", "last99")
    return args, tmp / "t", ("'last99' asks for 99 MoE layers", "has 4", "last4")


@case("train-layers-empty")
def _(ws, tmp, mp):
    args = swap(train_args(ws, ws.routing, tmp / "t"), "last2", "")
    return args, tmp / "t", ("setting 'layers'", "is not 'all', 'lastN'")


@case("collect-layers-twice")
def _(ws, tmp, mp):
    args = swap(collect_args(ws, ws.data, tmp / "r.json"), "last2", "3,3")
    return args, tmp / "r.json", ("'3,3' names a layer twice",)


@case("train-letter-loss-on-continuation-routing")
def _(ws, tmp, mp):
    assert (
        main([str(a) for a in collect_args(ws, ws.data, tmp / "cont.json", "--scoring", "continuation")]) == 0
    )
    return (
        train_args(ws, tmp / "cont.json", tmp / "t", "--scoring", "letter"),
        tmp / "t",
        ("cont.json", "continuation scoring", "scoring=letter"),
    )


@case("train-routing-is-correct-disagrees-with-answers")
def _(ws, tmp, mp):
    entry = ws.routing_entry()
    entry["is_correct"] = entry["model_answer"] != entry["correct_answer"]
    bad = routing_file(tmp / "liar.json", {"x": entry})
    return train_args(ws, bad, tmp / "t"), tmp / "t", ("liar.json", "id x", "'is_correct'", "'model_answer'")


@case("train-routing-layer-listed-twice")
def _(ws, tmp, mp):
    entry = ws.routing_entry()
    entry["last_token_routing"]["layers"].append(entry["last_token_routing"]["layers"][0])
    bad = routing_file(tmp / "twice.json", {"x": entry})
    return train_args(ws, bad, tmp / "t"), tmp / "t", ("twice.json", "id x", "twice")


@case("train-routing-huge-expert-index")
def _(ws, tmp, mp):
    bad = routing_file(
        tmp / "huge.json", {"x": with_weights(ws.routing_entry(), 3, {"expert_4000000000": 1.0})}
    )
    return train_args(ws, bad, tmp / "t"), tmp / "t", ("huge.json", "id x", "expert index 4000000000")


@case("train-routing-weights-sum-overflows")
def _(ws, tmp, mp):
    bad = routing_file(
        tmp / "sum.json", {"x": with_weights(ws.routing_entry(), 3, {"expert_0": 1e308, "expert_1": 1e308})}
    )
    return train_args(ws, bad, tmp / "t"), tmp / "t", ("sum.json", "id x", "overflow")


@case("train-routing-is-a-fifo")
def _(ws, tmp, mp):
    os.mkfifo(tmp / "pipe.json")
    return (
        train_args(ws, tmp / "pipe.json", tmp / "t"),
        tmp / "t",
        ("pipe.json", "FIFO", "not a regular file"),
    )


@case("collect-data-is-a-fifo")
def _(ws, tmp, mp):
    os.mkfifo(tmp / "pipe.jsonl")
    return collect_args(ws, tmp / "pipe.jsonl", tmp / "r.json"), tmp / "r.json", ("pipe.jsonl", "FIFO")


@case("inspect-data-is-a-device")
def _(ws, tmp, mp):
    return ["data", "inspect", "/dev/zero"], None, ("/dev/zero", "a device", "not a regular file")


@case("train-config-is-a-fifo")
def _(ws, tmp, mp):
    os.mkfifo(tmp / "pipe.yaml")
    return (
        train_args(ws, ws.routing, tmp / "t", "--config", tmp / "pipe.yaml"),
        tmp / "t",
        ("pipe.yaml", "FIFO"),
    )


@case("eval-template-without-question")
def _(ws, tmp, mp):
    args = eval_args(ws, ws.data, "--template", "Answer:", "--json", tmp / "r.json")
    return args, tmp / "r.json", ("template 'Answer:'", "no {question}")


@case("eval-letter-template-without-choices")
def _(ws, tmp, mp):
    args = eval_args(
        ws, ws.data, "--scoring", "letter", "--template", "Q: {question}\\nAnswer:", "--json", tmp / "r.json"
    )
    return args, tmp / "r.json", ("no {choices} field", "letter scoring")


@case("collect-template-unknown-field")
def _(ws, tmp, mp):
    args = collect_args(ws, ws.data, tmp / "r.json", "--template", "{question} {choices} {answer}")
    return args, tmp / "r.json", ("unknown field {answer}",)


@case("lm-eval-task-template-unbalanced-brace")
def _(ws, tmp, mp):
    args = ["lm-eval-task", "--data", ws.data, "--out", tmp / "task", "--template", "Q: {question"]
    return args, tmp / "task", ("not a valid format string",)


@case("eval-nothing-scorable")
def _(ws, tmp, mp):
    long = jsonl(
        tmp / "long.jsonl",
        *(
            good(i, question="what is red ?", choices=["A) one two three", "B) red blue green"])
            for i in range(3)
        ),
    )
    return (
        eval_args(ws, long, "--max-length", "1", "--json", tmp / "r.json"),
        tmp / "r.json",
        ("long.jsonl", "none of the 3 examples could be scored", "does not fit"),
    )


@case("inspect-invisible-choice")
def _(ws, tmp, mp):
    bad = jsonl(tmp / "ghost.jsonl", good(1), good(2, choices=["A) one", "B) \u200b\u200d"]))
    return ["data", "inspect", bad], None, ("ghost.jsonl", "line 2", "invisible")


@case("inspect-choices-differ-only-by-zero-width")
def _(ws, tmp, mp):
    bad = jsonl(tmp / "twins.jsonl", good(1, choices=["A) faster", "B) fas\u200bter", "C) slower"]))
    return ["data", "inspect", bad], None, ("twins.jsonl", "line 1", "differ only by invisible characters")


# --- generated: every numeric setting of every configuration, with each value its range refuses ----


def invalid_values(setting) -> list[tuple[str, str]]:
    """(label, text) for each value the setting must refuse: below and above its range, NaN and
    infinities for a number, a fraction for an integer, a word for either; a value that is not one
    of its choices; a word that is not true or false."""
    from moe_roma.io.config import _strip_optional

    kind = _strip_optional(setting.type)
    if typing.get_origin(kind) is tuple:
        kind = typing.get_args(kind)[0]
    if setting.choices:
        return [("bogus", "bogus")]
    if kind is bool:
        return [("maybe", "maybe")]
    if kind not in (int, float):
        return []
    lo, hi = setting.range or (None, None)
    out = [("word", "abc")]
    if lo is not None:
        out.append(("below", repr(lo - 1 if kind is int or lo >= 1 else lo - 0.5)))
    if hi is not None and hi != math.inf:
        out.append(("above", repr(hi + 1)))
    if kind is float:
        out += [("nan", "nan"), ("inf", "inf"), ("minus-inf", "-inf")]
    else:
        out.append(("fraction", "1.5"))
    return out


def train_setting_case(path: str, label: str, text: str):
    @case(f"train-setting-{path}-{label}")
    def _(ws, tmp, mp):
        return train_args(ws, ws.routing, tmp / "t", f"{path}={text}"), tmp / "t", (f"'{path}'", text)


def experiment_setting_case(kind: str, path: str, label: str, text: str):
    @case(f"experiment-{kind}-option-{path}-{label}")
    def _(ws, tmp, mp):
        (tmp / "exp.yaml").write_text(
            json.dumps(
                {
                    "methods": [{"name": "m", "kind": kind, "options": {path: text}}],
                    "seeds": [0],
                    "data": {"model": str(ws.model), "train": str(ws.data), "eval": {"dev": str(ws.data)}},
                }
            )
        )
        return (
            ["experiment", tmp / "exp.yaml", "--out", tmp / "exp"],
            tmp / "exp",
            ("exp.yaml", f"'{path}'", text),
        )


def _generate_setting_cases() -> None:
    from moe_roma.io.config import settings
    from moe_roma.methods.c3po import C3POConfig
    from moe_roma.methods.oracle import OracleConfig
    from moe_roma.methods.roma.config import TrainConfig

    for setting in settings(TrainConfig):
        for label, text in invalid_values(setting):
            train_setting_case(setting.path, label, text)
    for kind, cls in (("oracle", OracleConfig), ("c3po", C3POConfig)):
        for setting in settings(cls):
            for label, text in invalid_values(setting):
                experiment_setting_case(kind, setting.path, label, text)


_generate_setting_cases()


# --- generated: every count option of every command, with 0, a negative number and a word ---------


def count_option_case(command: str, option: str, text: str, build):
    @case(f"{command}-option-{option.lstrip('-')}-{text}")
    def _(ws, tmp, mp):
        args, out = build(ws, tmp)
        return (
            [*args, option, text],
            out,
            (f"argument {option}", repr(text) if not text.lstrip("-").isdigit() else text),
        )


COUNT_OPTIONS = {
    "collect": (
        ("--limit", "--batch-size", "--max-length", "--threads"),
        lambda ws, tmp: (collect_args(ws, ws.data, tmp / "r.json"), tmp / "r.json"),
    ),
    "eval": (
        ("--limit", "--batch-size", "--max-length", "--threads"),
        lambda ws, tmp: (eval_args(ws, ws.data, "--json", tmp / "r.json"), tmp / "r.json"),
    ),
    "lm-eval-task": (
        ("--limit",),
        lambda ws, tmp: (["lm-eval-task", "--data", ws.data, "--out", tmp / "task"], tmp / "task"),
    ),
    "train": (("--threads",), lambda ws, tmp: (train_args(ws, ws.routing, tmp / "t"), tmp / "t")),
    "diagnose": (
        ("--top-k",),
        lambda ws, tmp: (["diagnose", "--routing", ws.routing, "--out", tmp / "d"], tmp / "d"),
    ),
}
for _command, (_options, _build) in COUNT_OPTIONS.items():
    for _option in _options:
        for _text in ("0", "-3", "many"):
            count_option_case(_command, _option, _text, _build)


# --- generated: no code from a model folder, in every command that loads a model ------------------


def custom_code_model(ws: Workspace, tmp: Path, file: str = "config.json") -> Path:
    """A copy of the model whose ``file`` names the folder's own Python classes (``auto_map``), with the
    code beside it: loading it with trust_remote_code would run that code."""
    model = Path(shutil.copytree(ws.model, tmp / "model"))
    (model / "evil.py").write_text("raise SystemExit('the folder's code ran')\n")
    cfg = json.loads((model / file).read_text()) if (model / file).is_file() else {}
    key = "AutoTokenizer" if file == "tokenizer_config.json" else "AutoModelForCausalLM"
    cfg["auto_map"] = {key: ["evil.Evil", None] if key == "AutoTokenizer" else "evil.Evil"}
    (model / file).write_text(json.dumps(cfg))
    return model


MODEL_LOADERS = {
    "collect": lambda ws, tmp, m: (
        swap(collect_args(ws, ws.data, tmp / "r.json"), ws.model, m),
        tmp / "r.json",
    ),
    "eval": lambda ws, tmp, m: (
        swap(eval_args(ws, ws.data, "--json", tmp / "r.json"), ws.model, m),
        tmp / "r.json",
    ),
    "train": lambda ws, tmp, m: (swap(train_args(ws, ws.routing, tmp / "t"), ws.model, m), tmp / "t"),
    "apply": lambda ws, tmp, m: (["apply", "--model", m, "--routers", ws.routers], None),
    "export": lambda ws, tmp, m: (
        ["export", "--model", m, "--routers", ws.routers, "--out", tmp / "merged"],
        tmp / "merged",
    ),
    "experiment": lambda ws, tmp, m: (
        ["experiment", _model_experiment(ws, tmp, m), "--out", tmp / "exp"],
        tmp / "exp",
    ),
    "import-public": lambda ws, tmp, m: (
        [
            "import-public",
            "--checkpoint",
            _public_checkpoint(ws, tmp),
            "--model",
            m,
            "--out",
            tmp / "imported",
        ],
        tmp / "imported",
    ),
}


def _public_checkpoint(ws: Workspace, tmp: Path) -> Path:
    """A router_ft.pt as the public code writes it, for the model's last MoE layer."""
    import torch
    from safetensors.torch import load_file

    gate = load_file(ws.model / "model.safetensors")["model.layers.3.mlp.gate.weight"]
    torch.save({"target_layers": [3], "state_dict": {"layers.3.mlp.gate.weight": gate}}, tmp / "router_ft.pt")
    return tmp / "router_ft.pt"


def _model_experiment(ws: Workspace, tmp: Path, model: Path) -> Path:
    data = {"model": str(model), "train": str(ws.data), "eval": {"dev": str(ws.data)}}
    (tmp / "exp.yaml").write_text(json.dumps({"methods": [{"name": "base", "kind": "base"}], "data": data}))
    return tmp / "exp.yaml"


def remote_code_case(command: str, file: str):
    label = "tokenizer-" if file == "tokenizer_config.json" else ""

    @case(f"{command}-model-folder-with-{label}custom-code")
    def _(ws, tmp, mp):
        model = custom_code_model(ws, tmp, file)
        args, out = MODEL_LOADERS[command](ws, tmp, model)
        return args, out, (file, "auto_map", "its own Python code", "--trust-remote-code")


for _command in MODEL_LOADERS:
    remote_code_case(_command, "config.json")
remote_code_case("collect", "tokenizer_config.json")


# --- generated: every writing command, through the one output guard ------------------------------
#
# Each command that writes is listed with an argv whose output is ``tmp / OUT``; for each one the
# generated cases plant what the guard must refuse: a symbolic link at the output, a link inside an
# output folder, another kind of file in it, and a finished result without --overwrite.
# ``test_every_writing_command_goes_through_the_guard`` checks that this table names every command.

OUT = "out"


@dataclass
class Writer:
    argv: Callable[[Workspace, Path], list]  # the command, writing to tmp / OUT
    kind: str  # "file", "folder" (one result) or "shelf" (a folder of results side by side)
    finished: str | None  # what makes a finished result (a file inside the folder), None: the file itself


def _experiment_file(tmp: Path) -> Path:
    (tmp / "exp.yaml").write_text("name: guard\nmethods: [{name: base, kind: base}]\ndata: {testbed: true}\n")
    return tmp / "exp.yaml"


def _checkpoint(tmp: Path) -> Path:
    (tmp / "router_ft.pt").write_bytes(b"never read: the guard refuses first")
    return tmp / "router_ft.pt"


WRITERS: dict[str, Writer] = {
    "collect": Writer(lambda ws, tmp: collect_args(ws, ws.data, tmp / OUT), "file", None),
    "eval": Writer(lambda ws, tmp: eval_args(ws, ws.data, "--json", tmp / OUT), "file", None),
    "train": Writer(lambda ws, tmp: train_args(ws, ws.routing, tmp / OUT), "folder", "router_config.json"),
    "export": Writer(
        lambda ws, tmp: ["export", "--model", ws.model, "--routers", ws.routers, "--out", tmp / OUT],
        "folder",
        "config.json",
    ),
    "card": Writer(lambda ws, tmp: ["card", "--routers", copy_routers(ws, tmp / "roma")], "card", None),
    "import-public": Writer(
        lambda ws, tmp: [
            "import-public",
            "--checkpoint",
            _checkpoint(tmp),
            "--model",
            ws.model,
            "--out",
            tmp / OUT,
        ],
        "folder",
        "router_config.json",
    ),
    "diagnose": Writer(
        lambda ws, tmp: ["diagnose", "--routing", ws.routing, "--out", tmp / OUT], "folder", "report.json"
    ),
    "experiment": Writer(
        lambda ws, tmp: ["experiment", _experiment_file(tmp), "--out", tmp / OUT], "folder", "results.json"
    ),
    "demo": Writer(lambda ws, tmp: ["demo", "--out", tmp / OUT], "folder", "results.json"),
    "lm-eval-task": Writer(
        lambda ws, tmp: ["lm-eval-task", "--data", ws.data, "--out", tmp / OUT], "shelf", "roma_train.jsonl"
    ),
    "testbed build": Writer(
        lambda ws, tmp: ["testbed", "build", "--out", tmp / OUT, "--steps", "1"], "folder", "config.json"
    ),
    "testbed export": Writer(
        lambda ws, tmp: ["testbed", "export", "--out", tmp / OUT, "--splits", "in_dist"],
        "shelf",
        "in_dist.jsonl",
    ),
}
# Commands that only read (they print): the walk below checks that the two lists cover every command.
READERS = {"apply", "data inspect", "data presets", "testbed eval"}


def writer_case(command: str, writer: Writer, label: str, plant, needles: tuple[str, ...]):
    @case(f"{command.replace(' ', '-')}-{label}", keep=True)
    def _(ws, tmp, mp):
        args = writer.argv(ws, tmp)
        out = tmp / "roma" / "README.md" if writer.kind == "card" else tmp / OUT
        plant(out, tmp)
        return args, out, needles


def _victim(tmp: Path) -> Path:
    (tmp / "elsewhere").mkdir(exist_ok=True)
    (tmp / "elsewhere" / "precious.txt").write_text("not yours\n")
    return tmp / "elsewhere" / "precious.txt"


def _generate_writer_cases() -> None:
    for command, w in WRITERS.items():
        folder = w.kind in ("folder", "shelf")

        def link_at_out(out: Path, tmp: Path, folder=folder) -> None:
            victim = _victim(tmp)
            out.unlink(missing_ok=True)  # the card case: the router folder's own README.md
            out.symlink_to(victim.parent if folder else victim)

        writer_case(command, w, "output-is-a-symlink", link_at_out, ("symbolic link", "never follow links"))
        if w.kind == "card":
            continue
        if folder:

            def link_inside(out: Path, tmp: Path) -> None:
                out.mkdir()
                (out / "README.md").symlink_to(_victim(tmp))

            def other_files(out: Path, tmp: Path) -> None:
                out.mkdir()
                (out / "notes.txt").write_text("mine\n")

            writer_case(
                command,
                w,
                "folder-holds-a-symlink",
                link_inside,
                ("README.md", "symbolic link", "never follow"),
            )
            writer_case(
                command, w, "folder-holds-other-files", other_files, ("holds 'notes.txt'", "not part of a")
            )

        def finished(out: Path, tmp: Path, w=w, folder=folder) -> None:
            if folder:
                out.mkdir()
                (out / w.finished).write_text("{}\n")
            else:
                out.write_text("{}\n")

        writer_case(command, w, "finished-without-overwrite", finished, ("already", "--overwrite"))


_generate_writer_cases()


# --- generated: the dry run checks what the real run checks, and both before any model loads ------


def grid_file(ws: Workspace, tmp: Path, **change) -> Path:
    """A small valid experiment over the workspace's files, with ``change`` merged in."""
    cfg = {
        "name": "grid",
        "scoring": "letter",
        "seeds": [0],
        "train": {"layers": "last2", "scoring": "letter"},
    }
    cfg["methods"] = [{"name": "base", "kind": "base"}, {"name": "roma", "kind": "train"}]
    cfg["data"] = {"model": str(ws.model), "train": str(ws.data), "eval": {"dev": str(ws.data)}}
    cfg.update(change)
    (tmp / "exp.yaml").write_text(json.dumps(cfg))
    return tmp / "exp.yaml"


GRID_DEFECTS = {
    "paired-typo": ({"paired": [["roma", "bsae"]]}, ("'paired'", "'bsae'", "did you mean 'base'")),
    "paired-one-method-twice": ({"paired": [["roma", "roma"]]}, ("'paired'", "two methods")),
    "unknown-testbed": ({"data": {"testbed": "indomain"}}, ("unknown testbed 'indomain'", "in-domain")),
    "suite-seed-not-an-integer": (
        {"data": {"testbed": True, "suite_seed": "x"}},
        ("'data.suite_seed'", "integer"),
    ),
    "seed-not-an-integer": ({"seeds": [0, 1.5]}, ("'seeds' must be a list of integers",)),
    "train-method-without-its-scoring": (
        {"train": {"layers": "last2"}},
        ("method roma", "scoring=letter", "continuation"),
    ),
    "metrics-split-unknown": ({"metrics_split": "test"}, ("'metrics_split' 'test'", "dev")),
    "collect-layers-malformed": ({"collect_layers": "lastfew"}, ("'collect_layers'", "'lastfew'")),
}


def no_model_load(*args, **kwargs):
    raise AssertionError("a model was loaded before the checks were done")


def grid_defect_case(name: str, change: dict, needles: tuple[str, ...], dry: bool):
    @case(f"experiment-{'dry-run' if dry else 'real-run'}-{name}")
    def _(ws, tmp, mp):
        extra = dict(change)
        if name == "train-method-without-its-scoring":
            extra["scoring"] = (
                "continuation"  # the grid collects with continuation; roma trains letter by default
            )
        mp.setattr("moe_roma.models.loading.AutoModelForCausalLM.from_pretrained", no_model_load)
        args = [
            "experiment",
            grid_file(ws, tmp, **extra),
            "--out",
            tmp / "exp",
            *(["--dry-run"] if dry else []),
        ]
        return args, tmp / "exp", ("exp.yaml", *needles)


for _name, (_change, _needles) in GRID_DEFECTS.items():
    for _dry in (True, False):
        grid_defect_case(_name, _change, _needles, _dry)


# --- trackers: checked before any model loads, their network calls bounded --------------------------


def no_wandb_login(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        mp.delenv(key, raising=False)
    mp.setenv("NETRC", str(tmp / "no-netrc"))  # no stored login either
    mp.setattr("moe_roma.models.loading.AutoModelForCausalLM.from_pretrained", no_model_load)


@case("train-wandb-without-a-login")
def _(ws, tmp, mp):
    no_wandb_login(mp, tmp)
    args = train_args(ws, ws.routing, tmp / "t", "--report-to", "wandb")
    return args, tmp / "t", ("--report-to wandb needs a W&B login", "WANDB_MODE=offline")


@case("experiment-wandb-without-a-login")
def _(ws, tmp, mp):
    no_wandb_login(mp, tmp)
    args = ["experiment", grid_file(ws, tmp), "--out", tmp / "exp", "--report-to", "wandb"]
    return args, tmp / "exp", ("--report-to wandb needs a W&B login", "wandb login")


@case("experiment-dry-run-wandb-without-a-login")
def _(ws, tmp, mp):
    no_wandb_login(mp, tmp)
    args = ["experiment", grid_file(ws, tmp), "--out", tmp / "exp", "--report-to", "wandb", "--dry-run"]
    return args, tmp / "exp", ("--report-to wandb needs a W&B login",)


@case("train-mlflow-server-does-not-answer")
def _(ws, tmp, mp):
    """An MLflow server that does not answer: asked once with bounded retries and timeout, before the model"""
    import importlib.machinery
    import types

    fake = types.ModuleType("mlflow")
    fake.__spec__ = importlib.machinery.ModuleSpec("mlflow", None)

    class Client:
        def __init__(self, tracking_uri):
            assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
            assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "10"

        def search_experiments(self, max_results):
            raise ConnectionError("HTTPConnectionPool(host='10.255.255.1', port=5000): Max retries exceeded")

    fake.MlflowClient = Client
    mp.setitem(__import__("sys").modules, "mlflow", fake)
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        mp.setenv(key, "unset")  # recorded, so that the limits the check sets are undone after the case
        mp.delenv(key)
    mp.setenv("MLFLOW_TRACKING_URI", "http://10.255.255.1:5000")
    mp.setattr("moe_roma.models.loading.AutoModelForCausalLM.from_pretrained", no_model_load)
    args = train_args(ws, ws.routing, tmp / "t", "--report-to", "mlflow")
    return (
        args,
        tmp / "t",
        ("--report-to mlflow", "http://10.255.255.1:5000", "cannot be used", "Max retries"),
    )


@case("train-mlflow-file-store-on-mlflow-3")
def _(ws, tmp, mp):
    """MLFLOW_TRACKING_URI a file store, which MLflow 3 refuses when a run starts: refused before the model"""
    import importlib.machinery
    import types

    class Client:
        def __init__(self, tracking_uri):
            raise RuntimeError(
                "The filesystem tracking backend (e.g., './mlruns') is in maintenance mode and will not "
                "receive further updates. Please migrate to a database backend."
            )

    fake = types.ModuleType("mlflow")
    fake.__spec__ = importlib.machinery.ModuleSpec("mlflow", None)
    fake.__version__ = "3.17.2"
    fake.tracking = types.ModuleType("mlflow.tracking")
    fake.MlflowClient = fake.tracking.MlflowClient = Client
    mp.setitem(__import__("sys").modules, "mlflow", fake)
    mp.setitem(__import__("sys").modules, "mlflow.tracking", fake.tracking)
    mp.setenv("MLFLOW_TRACKING_URI", str(tmp / "mlruns"))
    mp.setattr("moe_roma.models.loading.AutoModelForCausalLM.from_pretrained", no_model_load)
    args = train_args(ws, ws.routing, tmp / "t", "--report-to", "mlflow")
    return (
        args,
        tmp / "t",
        ("--report-to mlflow", "MLflow 3.17.2 refuses the file store", "MLFLOW_ALLOW_FILE_STORE=true"),
    )


# --- files built to exhaust memory, and fields too long to be what they claim ------------------------

BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
)  # 1 KB that expands to 10^9 values


@case("experiment-yaml-alias-bomb")
def _(ws, tmp, mp):
    (tmp / "bomb.yaml").write_text(BILLION_LAUGHS)
    return (
        ["experiment", tmp / "bomb.yaml", "--out", tmp / "exp", "--dry-run"],
        tmp / "exp",
        ("bomb.yaml", "aliases", "more than 100000 values"),
    )


@case("train-config-yaml-alias-bomb")
def _(ws, tmp, mp):
    (tmp / "bomb.yaml").write_text(BILLION_LAUGHS)
    return (
        train_args(ws, ws.routing, tmp / "t", "--config", tmp / "bomb.yaml"),
        tmp / "t",
        ("bomb.yaml", "aliases"),
    )


@case("experiment-yaml-nested-too-deeply")
def _(ws, tmp, mp):
    (tmp / "deep.yaml").write_text("a: " + "[" * 50_000 + "]" * 50_000 + "\n")
    return (
        ["experiment", tmp / "deep.yaml", "--out", tmp / "exp"],
        tmp / "exp",
        ("deep.yaml", "nested too deeply"),
    )


@case("inspect-question-of-50-megabytes")
def _(ws, tmp, mp):
    bad = jsonl(tmp / "huge.jsonl", good(1), good(2, question="why " * 13_000_000))
    return (
        ["data", "inspect", bad],
        None,
        ("huge.jsonl", "line 2", "52000000 characters", "the limit is 100000"),
    )


@case("collect-choice-too-long")
def _(ws, tmp, mp):
    bad = jsonl(tmp / "long.jsonl", good(1, choices=["A) one", "B) " + "two " * 30_000]))
    return (
        collect_args(ws, bad, tmp / "r.json"),
        tmp / "r.json",
        ("long.jsonl", "line 1", "the limit is 100000"),
    )


@case("train-routing-input-text-too-long")
def _(ws, tmp, mp):
    bad = routing_file(tmp / "long.json", {"x": {**ws.routing_entry(), "input_text": "why " * 200_000}})
    return (
        train_args(ws, bad, tmp / "t"),
        tmp / "t",
        ("long.json", "id x", "'input_text'", "the limit is 500000"),
    )


@case("diagnose-disk-full-replacing-a-report", keep=True)
def _(ws, tmp, mp):
    """The disk fills while the new report is written: one sentence naming the file; the old report stays."""
    (tmp / "d").mkdir()
    (tmp / "d" / "report.json").write_text('{"old": true}\n')
    mp.setattr("moe_roma.io.atomic.os.fsync", no_space)
    args = ["diagnose", "--routing", ws.routing, "--out", tmp / "d", "--overwrite"]
    return args, tmp / "d", (str(tmp / "d" / "report.json"), "could not be written (No space left on device)")


# --- generated: every numeric setting of both testbeds' builds, refused before anything is built -----


def build_setting_case(testbed: str, name: str, label: str, text: str):
    @case(f"testbed-build-{testbed}-{name.replace('_', '-')}-{label}")
    def _(ws, tmp, mp):
        option = "--" + name.replace("_", "-")
        args = ["testbed", "build", "--testbed", testbed, "--out", tmp / "tb", option, text]
        return args, tmp / "tb", (option, text if text != "nan" else "nan")


def _generate_build_setting_cases() -> None:
    from moe_roma.io.config import settings
    from moe_roma.testbed.config import BuildConfig, DownstreamBuildConfig

    for testbed, cls in (("in-domain", BuildConfig), ("downstream", DownstreamBuildConfig)):
        for s in settings(cls):
            if s.type not in (int, float) or s.range is None:
                # choices and strings are argparse's and the generic matrix's; the seed is any integer
                continue
            lo, hi = s.range
            if lo is not None and lo > 0:
                values = [("zero", "0")]
            elif hi == 1:
                values = [("above-one", "1.5")]
            else:
                values = [("negative", "-1")]
            if s.type is float:
                values.append(("nan", "nan"))
            for label, text in values:
                build_setting_case(testbed, s.name, label, text)


_generate_build_setting_cases()


@case("testbed-build-top-k-above-the-experts")
def _(ws, tmp, mp):
    args = ["testbed", "build", "--out", tmp / "tb", "--num-experts", "4", "--top-k", "6"]
    return args, tmp / "tb", ("--top-k 6", "--num-experts 4")


@case("testbed-build-oracle-layers-past-the-model")
def _(ws, tmp, mp):
    args = [
        "testbed",
        "build",
        "--testbed",
        "downstream",
        "--out",
        tmp / "tb",
        "--num-layers",
        "3",
        "--tuned-layers",
        "5",
    ]
    return args, tmp / "tb", ("--tuned-layers 5", "--num-layers 3")


# --- the test -------------------------------------------------------------------------------------


def snapshot(path: Path) -> dict[str, bytes] | None:
    if not path.exists():
        return None
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): _content(p) for p in sorted(path.rglob("*"))}


def _content(p: Path) -> bytes:
    if p.is_symlink():
        return b"-> " + str(os.readlink(p)).encode()
    if p.is_file():
        return p.read_bytes()
    return b"/" if p.is_dir() else b"special"  # a FIFO: reading it would block


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp")) if folder.is_dir() else []


def test_matrix_is_large_and_spans_every_command():
    assert len(CASES) >= 120
    for command in ("inspect", "collect", "train", "apply", "export", "eval", "lm-eval-task", "experiment"):
        assert any(name.startswith(command + "-") for name in CASES), command


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_in_one_line_and_leaves_nothing(name, ws, tmp_path, monkeypatch, capsys):
    spec = CASES[name]
    args, out, needles = spec.build(ws, tmp_path, monkeypatch)
    before = snapshot(out) if out is not None else None
    assert spec.keep == (before is not None), "only keep=True cases may start with their output present"
    everything = snapshot(tmp_path)
    capsys.readouterr()  # whatever the setup printed
    try:
        code, _, err = run(args, capsys)
        assert code == 2, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in err, err
        for needle in needles:
            assert needle in err, (needle, err)
        if out is not None:
            assert snapshot(out) == before, f"{out} was left behind or changed"
            assert leftovers(out.parent) == [] and leftovers(out) == []
        # Nothing else either: no folder created on the way to --out, no input touched, no temporary file.
        assert snapshot(tmp_path) == everything
        assert not list(ws.root.rglob(".*.tmp"))
    finally:
        while HELD:  # the other run's lock, held by the case, goes only now
            HELD.pop().release()


def test_rtl_and_emoji_text_is_accepted(ws, tmp_path, capsys):
    text = jsonl(
        tmp_path / "rtl.jsonl",
        good(1, question="ما هو ٢ + ٢ ؟ 🙂", choices=["A) أربعة 🧮", "B) שלוש"]),
        good(
            2, question="👩‍👩‍👧 which \u202ereversed\u202c word ?", choices=["A) 🐈", "B) 🐕‍🦺"], answer="B"
        ),
    )
    code, out, err = run(["data", "inspect", text, "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["n_examples"] == 2 and report["answer_histogram"] == {"A": 1, "B": 1}
    code, out, err = run(["lm-eval-task", "--data", text, "--out", tmp_path / "task"], capsys)
    assert code == 0, err
    rows = [
        json.loads(line)
        for line in (tmp_path / "task" / "roma_rtl.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert rows[0]["choices"] == ["أربعة 🧮", "שלוש"] and "🙂" in rows[0]["query"]


def _leaf_commands(parser, prefix: str = "") -> dict[str, object]:
    """Every command the ``roma`` parser registers, as ``"testbed build"``, with its parser."""
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {prefix: parser}
    leaves = {}
    for name, sub in subs[0].choices.items():
        leaves.update(_leaf_commands(sub, f"{prefix} {name}".strip()))
    return leaves


def test_every_writing_command_goes_through_the_guard(ws, tmp_path, monkeypatch, capsys):
    """Walk the registered commands: each is a writer or a reader, every one with an output option is a
    writer, and every writer calls ``io.outputs.guard_output`` on its output before it writes."""
    from moe_roma.cli import build_parser
    from moe_roma.io.errors import RomaError

    leaves = _leaf_commands(build_parser())
    assert set(leaves) == set(WRITERS) | READERS, (
        "a new command: list it in WRITERS (and its cases) or READERS"
    )
    for name, parser in leaves.items():
        options = {o for a in parser._actions for o in a.option_strings}
        if options & {"--out", "--predictions"}:
            assert name in WRITERS, name
    calls: list[tuple[str, Path]] = []

    def spy(option, path, *args, **kwargs):
        calls.append((option, Path(path)))
        raise RomaError("guarded")

    monkeypatch.setattr("moe_roma.io.outputs.guard_output", spy)
    for name, writer in WRITERS.items():
        tmp = tmp_path / name.replace(" ", "-")
        tmp.mkdir()
        calls.clear()
        code, _, err = run(writer.argv(ws, tmp), capsys)
        assert code == 2 and "guarded" in err, (name, err)
        expected = tmp / "roma" / "README.md" if writer.kind == "card" else tmp / OUT
        assert calls and calls[0][1] == expected, (name, calls)
        assert not (tmp / OUT).exists(), name
