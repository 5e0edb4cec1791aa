"""The commands end to end on a tiny model saved to disk, and their refusals of bad input."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from helpers.examples import make_examples, write_data
from helpers.tiny_models import build_tiny_tokenizer, save_tiny_model
from moe_roma.cli import main
from moe_roma.routing.store import load_routing_store


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    save_tiny_model(root / "model", "qwen3_moe", num_layers=4)
    write_data(root / "train.jsonl", make_examples(20))
    return root


def run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(code, err, *needles):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_collect_train_apply_export(workspace, capsys):
    w = workspace
    code, out, err = run(
        [
            "collect",
            "--model",
            w / "model",
            "--data",
            w / "train.jsonl",
            "--out",
            w / "routing.json",
            "--layers",
            "last3",
            "--batch-size",
            "8",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    assert "collected 20 examples" in out and "examples/s" in out
    routing = json.loads((w / "routing.json").read_text())
    assert len(routing) == 20 and (w / "routing.safetensors").is_file()
    assert [x["layer"] for x in routing["s0"]["last_token_routing"]["layers"]] == [1, 2, 3]

    code, out, err = run(
        [
            "train",
            "--model",
            w / "model",
            "--routing",
            w / "routing.json",
            "--out",
            w / "roma",
            "--schedule.epochs",
            "2",
            "--schedule.batch-size",
            "4",
            "--optimizer.lr",
            "0.01",
            "--layers",
            "last2",
            "--no-progress",
            "graph.dedupe_threshold=1.01",
        ],
        capsys,
    )
    assert code == 0, err
    assert "trained routers of layers [2, 3]" in out
    cfg = json.loads((w / "roma" / "router_config.json").read_text())
    assert cfg["tuned_layers"] == [2, 3] and cfg["family"] == "qwen3_moe" and cfg["method"] == "roma"
    assert cfg["hyperparameters"]["epochs"] == 2 and cfg["data_fingerprint"]

    code, out, err = run(["apply", "--model", w / "model", "--routers", w / "roma", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["tuned_layers"] == [2, 3] and all(
        c["relative_change"] > 0 for c in report["changes"].values()
    )

    code, out, err = run(
        ["export", "--model", w / "model", "--routers", w / "roma", "--out", w / "merged"], capsys
    )
    assert code == 0, err
    merged = AutoModelForCausalLM.from_pretrained(w / "merged")
    base = AutoModelForCausalLM.from_pretrained(w / "model")
    from safetensors.torch import load_file

    tuned = load_file(w / "roma" / "router_weights.safetensors")
    for name, p in merged.named_parameters():
        expected = tuned.get(name, dict(base.named_parameters())[name])
        assert torch.equal(p, expected), name


def test_train_scores_answers_as_collect_did_unless_told(workspace, tmp_path, capsys):
    """No --scoring: the routing file's recorded scoring is the task loss; a contrary --scoring is refused."""
    w = workspace
    routing = tmp_path / "routing.json"
    code, _, err = run(
        [
            "collect",
            "--model",
            w / "model",
            "--data",
            w / "train.jsonl",
            "--out",
            routing,
            "--layers",
            "last2",
            "--scoring",
            "continuation",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    common = [
        "--model",
        w / "model",
        "--routing",
        routing,
        "--layers",
        "last2",
        "--schedule.epochs",
        "1",
        "--schedule.batch-size",
        "8",
        "--no-progress",
    ]
    code, _, err = run(["train", *common, "--out", tmp_path / "roma"], capsys)
    assert code == 0, err
    cfg = json.loads((tmp_path / "roma" / "router_config.json").read_text())
    assert cfg["hyperparameters"]["scoring"] == "continuation"
    code, _, err = run(["train", *common, "--out", tmp_path / "roma-letter", "--scoring", "letter"], capsys)
    assert_refused(code, err, "collected with continuation scoring", "scoring=letter")
    assert not (tmp_path / "roma-letter" / "router_config.json").exists()


def test_bad_inputs_are_refused_with_one_sentence(workspace, tmp_path, capsys):
    w = workspace
    code, _, err = run(
        ["collect", "--model", tmp_path / "nope", "--data", w / "train.jsonl", "--out", tmp_path / "r.json"],
        capsys,
    )
    assert_refused(code, err, "does not exist")
    # A dense model.
    dense = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=70,
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    )
    dense.save_pretrained(tmp_path / "dense")
    build_tiny_tokenizer().save_pretrained(tmp_path / "dense")
    capsys.readouterr()
    code, _, err = run(
        ["collect", "--model", tmp_path / "dense", "--data", w / "train.jsonl", "--out", tmp_path / "r.json"],
        capsys,
    )
    assert_refused(code, err, "no MoE routers found in LlamaForCausalLM")
    # A layer that is not an MoE layer.
    code, _, err = run(
        [
            "collect",
            "--model",
            w / "model",
            "--data",
            w / "train.jsonl",
            "--out",
            tmp_path / "r.json",
            "--layers",
            "7",
        ],
        capsys,
    )
    assert_refused(code, err, "not MoE layers")
    # Bad data: an answer not among the choices.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q?", "choices": ["A) x", "B) y"], "answer": "D"}\n')
    code, _, err = run(
        ["collect", "--model", w / "model", "--data", bad, "--out", tmp_path / "r.json"], capsys
    )
    assert_refused(code, err, str(bad), "line 1")
    assert not (tmp_path / "r.json").exists()
    # Routing with NaN, and routing recorded for another model (an expert index it does not have).
    good = json.loads((w / "routing.json").read_text()) if (w / "routing.json").exists() else None
    if good is None:
        pytest.skip("needs the pipeline test's routing file")
    entry = next(iter(good.values()))
    nan = dict(entry)
    nan["last_token_routing"] = {"layers": [{"layer": 3, "routing_weights": {"expert_0": float("nan")}}]}
    (tmp_path / "nan.json").write_text(json.dumps({"x1": nan}))
    code, _, err = run(
        ["train", "--model", w / "model", "--routing", tmp_path / "nan.json", "--out", tmp_path / "t"], capsys
    )
    assert_refused(code, err, "nan.json", "id x1", "finite")
    other = dict(entry)
    other["last_token_routing"] = {"layers": [{"layer": 3, "routing_weights": {"expert_63": 1.0}}]}
    (tmp_path / "other.json").write_text(json.dumps({"x2": other}))
    code, _, err = run(
        ["train", "--model", w / "model", "--routing", tmp_path / "other.json", "--out", tmp_path / "t"],
        capsys,
    )
    assert_refused(code, err, "64 experts", "another model")
    # A router checkpoint for another base model.
    save_tiny_model(tmp_path / "olmoe", "olmoe", num_layers=4)
    capsys.readouterr()
    if (w / "roma").exists():
        code, _, err = run(["apply", "--model", tmp_path / "olmoe", "--routers", w / "roma"], capsys)
        assert_refused(code, err, "another base model")
    code, _, err = run(
        [
            "train",
            "--model",
            w / "model",
            "--routing",
            w / "routing.json",
            "--out",
            tmp_path / "t",
            "regularizer.name=magic",
        ],
        capsys,
    )
    assert_refused(code, err, "regularizer.name must be one of")
    assert not (tmp_path / "t" / "router_config.json").exists()


def test_attention_implementation_is_chosen_by_option_and_does_not_change_routing(
    workspace, tmp_path, capsys
):
    w = workspace
    stores = {}
    for impl in ("sdpa", "eager"):
        out = tmp_path / f"{impl}.json"
        code, _, err = run(
            [
                "collect",
                "--model",
                w / "model",
                "--data",
                w / "train.jsonl",
                "--out",
                out,
                "--layers",
                "last2",
                "--attn-implementation",
                impl,
                "--no-progress",
            ],
            capsys,
        )
        assert code == 0, err
        stores[impl] = load_routing_store(out)
    torch.testing.assert_close(stores["sdpa"].routing, stores["eager"].routing, atol=1e-5, rtol=0)
    assert stores["sdpa"].model_answer == stores["eager"].model_answer
    from moe_roma.models.loading import load_model

    model, _ = load_model(w / "model", attn_implementation="eager")
    assert model.config._attn_implementation == "eager"
    code, _, err = run(
        [
            "collect",
            "--model",
            w / "model",
            "--data",
            w / "train.jsonl",
            "--out",
            tmp_path / "x.json",
            "--attn-implementation",
            "warp_drive",
        ],
        capsys,
    )
    assert_refused(code, err, "cannot load a causal LM", "warp_drive")
    assert not (tmp_path / "x.json").exists()
