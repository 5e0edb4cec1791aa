"""A bad-input matrix across every command: each case is refused in one sentence and leaves nothing behind.

Every case runs ``roma ...`` in-process and checks the same contract: exit status 2; stderr is exactly
one non-empty line, with no traceback, naming the file (and the record, where there is one) and the
problem; and no output is left: the ``--out`` path does not exist afterwards (or, where it existed
before, is unchanged) and no ``.*.tmp`` file is left in its folder.

Failures of the file system are simulated (the tests run as root, where ``chmod`` stops nothing): a
read-only folder by ``tempfile.mkstemp`` raising EACCES, a full disk by ``os.fsync`` raising ENOSPC
or by safetensors' ``save_file`` raising its own error for ENOSPC.
"""

from __future__ import annotations

import errno
import json
import shutil
import tempfile
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
from moe_roma.methods.roma.state import STATE_NAME

ENOSPC_SAFETENSORS = "Error while serializing: I/O error: No space left on device (os error 28)"


@dataclass
class Workspace:
    root: Path
    model: Path
    data: Path
    routing: Path
    routers: Path

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
    code = main(["collect", "--model", str(w.model), "--data", str(w.data), "--out", str(w.routing),
                 "--layers", "last2", "--batch-size", "8", "--device", "cpu", "--no-progress"])  # fmt: skip
    assert code == 0
    code = main(["train", "--model", str(w.model), "--routing", str(w.routing), "--out", str(w.routers),
                 "--epochs", "1", "--batch-size", "4", "--layers", "last2", "--device", "cpu", "--no-progress",
                 "dedupe_threshold=1.01"])  # fmt: skip
    assert code == 0
    return w


# --- the cases ------------------------------------------------------------------------------------
#
# A case builds its inputs under ``tmp`` and returns (argv, output path or None, needles for stderr).
# ``keep=True`` marks a case whose output path exists beforehand: it must be left exactly as it was.


@dataclass
class Case:
    build: Callable[[Workspace, Path, pytest.MonkeyPatch], tuple[list, Path | None, tuple[str, ...]]]
    keep: bool = False


CASES: dict[str, Case] = {}


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
    return {"id": f"q{i}", "question": f"what is {i} ?", "choices": ["A) one", "B) two"], "answer": "A", **change}


def routing_file(path: Path, entries: dict) -> Path:
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def with_weights(entry: dict, layer: int, weights: dict) -> dict:
    entry = dict(entry)
    entry["last_token_routing"] = {**entry["last_token_routing"], "layers": [{"layer": layer, "routing_weights": weights}]}
    return entry


def copy_routers(ws: Workspace, dest: Path) -> Path:
    shutil.copytree(ws.routers, dest)
    return dest


def dense_model(path: Path) -> Path:
    config = LlamaConfig(vocab_size=96, hidden_size=16, intermediate_size=16, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
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
    return ["train", "--model", ws.model, "--routing", routing, "--out", out, "--epochs", "1", "--batch-size", "4",
            "--layers", "last2", "--device", "cpu", "--no-progress", *extra, "dedupe_threshold=1.01"]  # fmt: skip


def collect_args(ws: Workspace, data: Path, out: Path, *extra) -> list:
    return ["collect", "--model", ws.model, "--data", data, "--out", out, "--layers", "last2", "--device", "cpu",
            "--no-progress", *extra]  # fmt: skip


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
    bad = jsonl(tmp / "surrogate.jsonl", good(1), good(2, question="what is \ud800 ?"))  # json.dumps escapes it
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
    bad = jsonl(tmp / "nan.jsonl", {"query": "2 + 2 =", "choices": ["3", "4"], "gold": 1},
                '{"query": "1 + 1 =", "choices": ["2", "3"], "gold": NaN}')  # fmt: skip
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
    bad.write_text("ID\tQuestion Stem\tChoices\tComplete Question\tAnswer Key\n"
                   "7-1\twhat is red ?\t(A) a colour (B) a dog\twhat is red ? a colour\tA\n"
                   "7-2\twhat is blue ?\t(A) a col", encoding="utf-8")  # fmt: skip
    return collect_args(ws, bad, tmp / "out" / "r.json"), tmp / "out" / "r.json", ("obqa.tsv", "line 3", "3 tab-separated fields")


@case("collect-missing-data")
def _(ws, tmp, mp):
    return collect_args(ws, tmp / "nothing.jsonl", tmp / "r.json"), tmp / "r.json", ("nothing.jsonl", "no such file")


@case("collect-missing-model")
def _(ws, tmp, mp):
    args = collect_args(ws, ws.data, tmp / "r.json")
    args[args.index(ws.model)] = tmp / "no-model"
    return args, tmp / "r.json", ("no-model", "model path does not exist")


@case("collect-layer-not-moe")
def _(ws, tmp, mp):
    args = collect_args(ws, ws.data, tmp / "r.json")
    args[args.index("last2")] = "2,7"
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
    return collect_args(ws, ws.data, tmp / "r.json"), tmp / "r.json", ("r.safetensors", "No space left on device")


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
    bad = routing_file(tmp / "types.json", {"s0": ws.routing_entry(), "x": {**ws.routing_entry(), "is_correct": "yes"}})
    return train_args(ws, bad, tmp / "t"), tmp / "t", ("types.json", "id x", "'is_correct' must be true or false")


@case("train-routing-duplicate-ids")
def _(ws, tmp, mp):
    entry = json.dumps(ws.routing_entry())
    bad = tmp / "dup.json"
    bad.write_text("{" + ", ".join(f'"{sid}": {entry}' for sid in ("s0", "s1", "s0")) + "}")
    return train_args(ws, bad, tmp / "t"), tmp / "t", ("dup.json", "id s0", "duplicate id")


@case("train-routing-lone-surrogate")
def _(ws, tmp, mp):
    bad = routing_file(tmp / "surrogate.json", {"x": {**ws.routing_entry(), "input_text": "what is \ud800 ?"}})
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
    return train_args(ws, bad, tmp / "t"), tmp / "t", ("layer.json", "layers [9] are not MoE layers", "another model")


@case("train-missing-model")
def _(ws, tmp, mp):
    args = train_args(ws, ws.routing, tmp / "t")
    args[args.index(ws.model)] = tmp / "gone"
    return args, tmp / "t", ("gone", "model path does not exist")


@case("train-yaml-wrong-type")
def _(ws, tmp, mp):
    (tmp / "train.yaml").write_text("epochs: three\nlr: 0.01\n")
    args = train_args(ws, ws.routing, tmp / "t", "--config", tmp / "train.yaml")
    args.remove("--epochs")
    args.remove("1")
    return args, tmp / "t", ("train.yaml", "'epochs'", "'three'")


@case("train-corrupted-resume-state", keep=True)
def _(ws, tmp, mp):
    (tmp / "t").mkdir()
    (tmp / "t" / STATE_NAME).write_bytes(b"\x00\x01garbage, not a safetensors header" * 7)
    return train_args(ws, ws.routing, tmp / "t", "--resume"), tmp / "t", (STATE_NAME, "not a readable training state")


@case("train-embedder-does-not-exist")
def _(ws, tmp, mp):
    args = train_args(ws, ws.routing, tmp / "t", "--embedder", "/nonexistent")
    return args, tmp / "t", ("/nonexistent", "sentence embedder folder does not exist")


@case("train-read-only-folder")
def _(ws, tmp, mp):
    mp.setattr("moe_roma.io.atomic.tempfile.mkstemp", read_only)
    return train_args(ws, ws.routing, tmp / "t"), tmp / "t", (str(tmp / "t"), "Permission denied")


@case("train-disk-full-router-checkpoint")
def _(ws, tmp, mp):
    mp.setattr("moe_roma.models.checkpoint.save_file", safetensors_no_space)
    return train_args(ws, ws.routing, tmp / "t"), tmp / "t", ("router_weights.safetensors", "No space left on device")


@case("train-disk-full-router-config")
def _(ws, tmp, mp):
    mp.setattr("moe_roma.io.atomic.os.fsync", no_space)  # the weights are complete, the config is not
    return train_args(ws, ws.routing, tmp / "t"), tmp / "t", ("router_config.json", "No space left on device")


# roma apply and roma export: checkpoints and models that do not fit, and failed writes.


@case("apply-dense-model")
def _(ws, tmp, mp):
    dense = dense_model(tmp / "dense")
    return ["apply", "--model", dense, "--routers", ws.routers], None, (f"{dense}: no MoE routers found in LlamaForCausalLM",)


@case("apply-garbage-router-weights")
def _(ws, tmp, mp):
    routers = copy_routers(ws, tmp / "roma")
    (routers / "router_weights.safetensors").write_bytes(b"\xde\xad\xbe\xef" * 64)
    return ["apply", "--model", ws.model, "--routers", routers], None, ("router_weights.safetensors", "not a readable safetensors file")


@case("apply-truncated-router-config")
def _(ws, tmp, mp):
    routers = copy_routers(ws, tmp / "roma")
    text = (routers / "router_config.json").read_text()
    (routers / "router_config.json").write_text(text[:40])
    return ["apply", "--model", ws.model, "--routers", routers], None, ("router_config.json", "malformed JSON")


@case("export-into-non-empty-folder", keep=True)
def _(ws, tmp, mp):
    (tmp / "merged").mkdir()
    (tmp / "merged" / "notes.txt").write_text("mine\n")
    args = ["export", "--model", ws.model, "--routers", ws.routers, "--out", tmp / "merged"]
    return args, tmp / "merged", ("merged", "output folder is not empty")


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
    return ["lm-eval-task", "--data", bad, "--out", tmp / "task"], tmp / "task", ("quote_test.csv", "row 2", "malformed CSV")


@case("lm-eval-task-huge-gold")
def _(ws, tmp, mp):
    bad = jsonl(tmp / "huge.jsonl", {"query": "2 + 2 =", "choices": ["3", "4"], "gold": 1e300})
    return ["lm-eval-task", "--data", bad, "--out", tmp / "task"], tmp / "task", ("huge.jsonl", "line 1", "'gold' is 10000", "...", "2 choices")


@case("lm-eval-task-read-only-folder")
def _(ws, tmp, mp):
    mp.setattr("moe_roma.io.atomic.tempfile.mkstemp", read_only)
    return ["lm-eval-task", "--data", ws.data, "--out", tmp / "task"], tmp / "task", ("task", "Permission denied")


# roma experiment: YAML problems, and bad data named in it.


@case("experiment-seeds-wrong-type")
def _(ws, tmp, mp):
    (tmp / "exp.yaml").write_text('seeds: "x"\nmethods: [{name: base, kind: base}]\ndata: {testbed: true}\n')
    return ["experiment", tmp / "exp.yaml", "--out", tmp / "exp"], tmp / "exp", ("exp.yaml", "'seeds' must be a list of integers", "'x'")


@case("experiment-truncated-yaml")
def _(ws, tmp, mp):
    (tmp / "exp.yaml").write_text("name: cut\nmethods: [{name: base, kind: base}\ndata: {testbed: tr")
    return ["experiment", tmp / "exp.yaml", "--out", tmp / "exp"], tmp / "exp", ("exp.yaml", "line", "malformed YAML")


@case("experiment-bad-eval-data")
def _(ws, tmp, mp):
    bad = jsonl(tmp / "dev.jsonl", good(1), good(2, answer="E"))
    (tmp / "exp.yaml").write_text(json.dumps({
        "methods": [{"name": "base", "kind": "base"}], "seeds": [0],
        "data": {"model": str(ws.model), "train": str(ws.data), "eval": {"dev": str(bad)}},
    }))  # fmt: skip
    return ["experiment", tmp / "exp.yaml", "--out", tmp / "exp"], tmp / "exp", ("dev.jsonl", "line 2", "'answer'", "only 2 choices")


# --- the test -------------------------------------------------------------------------------------


def snapshot(path: Path) -> dict[str, bytes] | None:
    if not path.exists():
        return None
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else b"/" for p in sorted(path.rglob("*"))}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp")) if folder.is_dir() else []


def test_matrix_is_large_and_spans_every_command():
    assert len(CASES) >= 25
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


def test_rtl_and_emoji_text_is_accepted(ws, tmp_path, capsys):
    text = jsonl(tmp_path / "rtl.jsonl",
                 good(1, question="ما هو ٢ + ٢ ؟ 🙂", choices=["A) أربعة 🧮", "B) שלוש"]),
                 good(2, question="👩‍👩‍👧 which \u202ereversed\u202c word ?", choices=["A) 🐈", "B) 🐕‍🦺"], answer="B"))  # fmt: skip
    code, out, err = run(["data", "inspect", text, "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["n_examples"] == 2 and report["answer_histogram"] == {"A": 1, "B": 1}
    code, out, err = run(["lm-eval-task", "--data", text, "--out", tmp_path / "task"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "task" / "roma_rtl.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[0]["choices"] == ["أربعة 🧮", "שלוש"] and "🙂" in rows[0]["query"]

