"""Experiment files with Hugging Face datasets sources, `roma experiment --dry-run` on every shipped
configuration (the paper's recipe included), and `--report-to` on an experiment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset, Features, Sequence, Value

import moe_roma
from helpers.tiny_models import save_tiny_model
from moe_roma.cli import main

CONFIGS = Path(moe_roma.__file__).parent / "configs"
WORDS = ["one", "two", "three", "four", "five", "six", "red", "blue", "green", "cat", "dog", "bird"]


def write_arc(path, n: int, offset: int = 0):
    """``n`` rows in allenai/ai2_arc's schema (id, question, choices {text, label}, answerKey)."""
    rows = [
        {
            "id": f"q{offset + i}",
            "question": f"what is {WORDS[(offset + i) % 12]} ?",
            "choices": {"text": [WORDS[(offset + i + j) % 12] for j in range(3)], "label": ["A", "B", "C"]},
            "answerKey": "ABC"[i % 3],
        }
        for i in range(n)
    ]
    features = Features(
        {
            "id": Value("string"),
            "question": Value("string"),
            "choices": {"text": Sequence(Value("string")), "label": Sequence(Value("string"))},
            "answerKey": Value("string"),
        }
    )
    Dataset.from_list(rows, features=features).to_parquet(str(path))
    return path


@pytest.mark.parametrize("config", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_configuration_passes_the_dry_run(config, capsys):
    assert main(["experiment", str(config), "--dry-run"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "dry run: the configuration is valid" in out and "write " in out


def test_the_paper_recipe_names_its_sources_and_settings(capsys):
    assert main(["experiment", str(CONFIGS / "recipes" / "olmoe-1b-7b-paper.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "load the model allenai/OLMoE-1B-7B-0125-Instruct" in out
    assert "read 13 training sources" in out and "read 7 evaluation splits" in out
    for preset in (
        "bigbench",
        "super_glue_boolq",
        "commonsense_qa",
        "social_i_qa",
        "openbookqa",
        "sciq",
        "super_glue_multirc",
        "knowref",
        "mmlu",
        "hellaswag",
        "piqa",
        "arc",
        "winogrande",
    ):
        assert f"preset {preset}" in out, preset
    assert "lr 7e-05, regulariser manifold, lambda 0.8, k 3" in out


@pytest.mark.parametrize(
    ("train", "needle"),
    [
        (
            '[{source: "hf:allenai/sciq:train", preset: sciqq}]',
            "unknown preset 'sciqq'; did you mean 'sciq'?",
        ),
        ('[{source: "hf:a:b:c:d"}]', "hf:NAME[:CONFIG][:SPLIT]"),
        ('[{source: "no/such/file.parquet"}]', "data source no/such/file.parquet does not exist"),
        (
            '[{source: "hf:x/y::train", fields: {question: q}}]',
            "'fields' must map question, choices and answer",
        ),
        ('[{source: "hf:x/y::train", limit: 0}]', "'limit' must be a positive integer"),
        ('[{path: "hf:x/y::train"}]', "a data source is a path, an hf:NAME"),
    ],
)
def test_the_dry_run_refuses_bad_sources_in_one_sentence(tmp_path, capsys, train, needle):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        f"data: {{model: m, train: {train}, eval: {{a: 'hf:x/y::test'}}}}\n"
        "methods: [{name: base, kind: base}]\n"
    )
    assert main(["experiment", str(cfg), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_experiment_on_datasets_sources_with_tensorboard(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    save_tiny_model(tmp_path / "model", "olmoe", num_layers=4)
    write_arc(tmp_path / "a.parquet", 10)
    write_arc(tmp_path / "b.parquet", 10, offset=10)
    folder = tmp_path / "arc"
    folder.mkdir()
    write_arc(folder / "test-00000-of-00001.parquet", 6, offset=20)
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"""
name: sources
data:
  model: {tmp_path / "model"}
  train: [{tmp_path / "a.parquet"}, {{source: {tmp_path / "b.parquet"}, preset: arc, limit: 6}}]
  eval: {{held: "hf:{folder}::test"}}
scoring: letter
seeds: [0]
train: {{epochs: 1, batch_size: 8, lr: 0.01, layers: last2, scoring: letter, dedupe_threshold: 1.01}}
methods: [{{name: base, kind: base}}, {{name: roma, kind: train}}]
""")
    assert (
        main(
            [
                "experiment",
                str(cfg),
                "--out",
                str(tmp_path / "out"),
                "--no-progress",
                "--report-to",
                "tensorboard",
            ]
        )
        == 0
    ), capsys.readouterr().err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["config"]["n_train"] == 16 and {r["n"] for r in results["rows"]} == {6}
    for method in ("base", "roma"):
        acc = EventAccumulator(str(tmp_path / "out" / "runs" / method / "seed0" / "tensorboard"))
        acc.Reload()
        row = next(r for r in results["rows"] if r["method"] == method)
        assert acc.Scalars("eval/held/accuracy")[-1].value == pytest.approx(row["accuracy"])
        assert ("task_loss" in acc.Tags()["scalars"]) == (method == "roma")
