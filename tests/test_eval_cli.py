"""``roma eval`` and ``roma lm-eval-task`` end to end, in process: outputs, base vs tuned, bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import yaml

from helpers.tiny_models import build_tiny_model, save_tiny_model
from moe_roma.cli import main
from moe_roma.data.loaders import load_examples
from moe_roma.models.checkpoint import apply_router_checkpoint, save_router_checkpoint
from moe_roma.models.discovery import discover_routers
from moe_roma.models.loading import load_model
from moe_roma.scoring.engine import evaluate

WORDS = (  # noqa: SIM905
    "one two three four five six seven eight nine ten red blue green cat dog bird fish big small"
).split()


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def rows(n: int = 16, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = 2 + i % 3
        choices = [" ".join(rng.choice(WORDS) for _ in range(1 + (i + c) % 3)) for c in range(k)]
        query = "what is " + " ".join(rng.choice(WORDS) for _ in range(3)) + " ?"
        out.append(
            {"query": query, "choices": choices, "gold": i % k, "task": "colours" if i % 2 else "numbers"}
        )
    return out


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A saved tiny model, a data file and a router checkpoint whose routers clearly differ."""
    root = tmp_path_factory.mktemp("eval_cli")
    model_dir = save_tiny_model(root / "model", num_layers=2)
    data = write_jsonl(root / "data.jsonl", rows())
    model, _ = load_model(model_dir)
    info = discover_routers(model)
    torch.manual_seed(1)
    with torch.no_grad():
        for layer in info.moe_layers:
            for p in info.routers[layer].parameters():
                p.add_(torch.randn_like(p) * 3)
    save_router_checkpoint(model, info, info.moe_layers, root / "routers")
    other = build_tiny_model("olmoe", num_layers=3)  # same family, another base
    other_info = discover_routers(other)
    save_router_checkpoint(other, other_info, other_info.moe_layers, root / "other_routers")
    return {
        "root": root,
        "model": str(model_dir),
        "data": data,
        "routers": str(root / "routers"),
        "other_routers": str(root / "other_routers"),
    }


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_eval_writes_json_with_the_figures(workdir, tmp_path, capsys):
    out_json = tmp_path / "report.json"
    rc, out, err = run_cli(
        [
            "eval",
            "--model",
            workdir["model"],
            "--data",
            workdir["data"],
            "--json",
            str(out_json),
            "--batch-size",
            "4",
            "--no-progress",
        ],
        capsys,
    )
    assert rc == 0, err
    assert err == ""
    report = json.loads(out_json.read_text())
    assert set(report) >= {"n", "acc", "acc_ci", "acc_norm", "tasks", "unusable", "seconds", "examples_per_s"}
    assert report["n"] == 16 and report["evaluated"] == "base" and report["scoring"] == "continuation"
    assert set(report["tasks"]) == {"colours", "numbers"}
    assert all({"n", "acc", "acc_norm"} <= set(t) for t in report["tasks"].values())
    assert report["unusable"] == [] and report["max_length"] == 128
    assert "examples/s" in out.splitlines()[0]
    # The same figures as the library on the same model.
    model, tok = load_model(workdir["model"])
    direct = evaluate(model, tok, load_examples(workdir["data"]), progress=False)
    assert (report["acc"], report["acc_norm"]) == (direct.acc, direct.acc_norm)


def test_letter_scoring_and_limit(workdir, tmp_path, capsys):
    out_json = tmp_path / "letter.json"
    rc, out, err = run_cli(
        [
            "eval",
            "--model",
            workdir["model"],
            "--data",
            workdir["data"],
            "--scoring",
            "letter",
            "--limit",
            "5",
            "--json",
            str(out_json),
            "--no-progress",
        ],
        capsys,
    )
    assert rc == 0, err
    report = json.loads(out_json.read_text())
    assert report["n"] == 5 and "acc_norm" not in report and report["limit"] == 5


def test_compare_base_reports_both_and_the_paired_difference(workdir, tmp_path, capsys):
    out_json, preds = tmp_path / "cmp.json", tmp_path / "preds.jsonl"
    rc, out, err = run_cli(
        [
            "eval",
            "--model",
            workdir["model"],
            "--routers",
            workdir["routers"],
            "--compare-base",
            "--data",
            workdir["data"],
            "--json",
            str(out_json),
            "--predictions",
            str(preds),
            "--no-progress",
        ],
        capsys,
    )
    assert rc == 0, err
    report = json.loads(out_json.read_text())
    assert report["evaluated"] == "tuned" and report["routers"] == workdir["routers"]
    cmp = report["comparison"]
    assert set(cmp) >= {"acc", "acc_norm", "tasks"}
    assert set(cmp["acc"]) >= {"diff", "diff_ci", "mcnemar_p", "n"}
    assert cmp["acc"]["base_acc"] == report["base"]["acc"] and cmp["acc"]["tuned_acc"] == report["acc"]
    assert "McNemar" in out and out.splitlines()[0].startswith("base")

    # Base figures equal a plain base run; tuned figures equal the routers applied by hand.
    model, tok = load_model(workdir["model"])
    examples = load_examples(workdir["data"])
    base = evaluate(model, tok, examples, progress=False)
    apply_router_checkpoint(model, workdir["routers"])
    tuned = evaluate(model, tok, examples, progress=False)
    assert (report["base"]["acc"], report["base"]["acc_norm"]) == (base.acc, base.acc_norm)
    assert (report["acc"], report["acc_norm"]) == (tuned.acc, tuned.acc_norm)
    lines = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["model"] for r in lines] == ["base"] * 16 + ["tuned"] * 16
    assert [r["pred"] for r in lines[:16]] == [it.pred for it in base.items]
    assert [r["pred"] for r in lines[16:]] == [it.pred for it in tuned.items]
    assert [it.scores for it in base.items] != [it.scores for it in tuned.items]  # the routers matter


def test_lm_eval_task_writes_yaml_and_jsonl(workdir, tmp_path, capsys):
    out_dir = tmp_path / "tasks"
    rc, out, err = run_cli(
        ["lm-eval-task", "--data", workdir["data"], "--out", str(out_dir), "--name", "demo"], capsys
    )
    assert rc == 0, err
    config = yaml.safe_load((out_dir / "demo.yaml").read_text())
    assert config["dataset_path"] == "json" and config["output_type"] == "multiple_choice"
    data_file = config["dataset_kwargs"]["data_files"]["test"]
    assert data_file == str((out_dir / "demo.jsonl").resolve())
    assert [m["metric"] for m in config["metric_list"]] == ["acc", "acc_norm"]
    docs = [json.loads(line) for line in Path(data_file).read_text().splitlines()]
    # llm-foundry records carry their own context: the query is scored as given, as lm-eval does.
    assert len(docs) == 16 and docs[0]["query"] == rows()[0]["query"]
    assert "--include_path" in out and "--tasks demo" in out


# --- bad input: one sentence on stderr, exit status 2, no traceback, no output -----------------


def assert_clean_failure(rc: int, err: str, *needles: str) -> None:
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("roma ") and ": error: " in lines[0]
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("records", "needles"),
    [
        ([{"query": "what is one ?", "gold": 0}], ["line 3", "missing field 'choices'"]),
        (
            [{"query": "what is one ?", "choices": ["one", "two", "three"], "gold": 7}],
            ["line 3", "'gold' is 7"],
        ),
    ],
    ids=["missing-choices", "answer-out-of-range"],
)
def test_bad_data_fails_cleanly(workdir, tmp_path, capsys, records, needles):
    data = write_jsonl(tmp_path / "bad.jsonl", rows(2) + records)  # the bad record is line 3
    for command in (["eval", "--model", workdir["model"]], ["lm-eval-task", "--out", str(tmp_path / "t")]):
        out_json = tmp_path / "out.json"
        extra = ["--json", str(out_json), "--no-progress"] if command[0] == "eval" else []
        rc, out, err = run_cli([*command, "--data", data, *extra], capsys)
        assert_clean_failure(rc, err, "bad.jsonl", *needles)
        assert not out_json.exists() and not (tmp_path / "t").exists()


def test_unknown_format_lists_the_formats(workdir, tmp_path, capsys):
    out_json = tmp_path / "out.json"
    rc, _, err = run_cli(
        [
            "eval",
            "--model",
            workdir["model"],
            "--data",
            workdir["data"],
            "--format",
            "bogus",
            "--json",
            str(out_json),
        ],
        capsys,
    )
    assert_clean_failure(rc, err, "unknown format 'bogus'", "llm-foundry", "mmlu-csv")
    assert not out_json.exists()


def test_router_checkpoint_of_another_base_model_is_refused(workdir, tmp_path, capsys):
    out_json = tmp_path / "out.json"
    rc, out, err = run_cli(
        [
            "eval",
            "--model",
            workdir["model"],
            "--routers",
            workdir["other_routers"],
            "--compare-base",
            "--data",
            workdir["data"],
            "--json",
            str(out_json),
            "--no-progress",
        ],
        capsys,
    )
    assert_clean_failure(rc, err, "another base model")
    assert not out_json.exists() and out == ""  # refused before the base model was evaluated


@pytest.mark.parametrize("missing", ["data", "model", "routers"])
def test_missing_paths_fail_cleanly(workdir, tmp_path, capsys, missing):
    paths = {"model": workdir["model"], "data": workdir["data"], "routers": workdir["routers"]}
    paths[missing] = str(tmp_path / f"no-such-{missing}")
    out_json = tmp_path / "out.json"
    rc, _, err = run_cli(
        [
            "eval",
            "--model",
            paths["model"],
            "--data",
            paths["data"],
            "--routers",
            paths["routers"],
            "--json",
            str(out_json),
            "--no-progress",
        ],
        capsys,
    )
    assert_clean_failure(rc, err, f"no-such-{missing}")
    assert not out_json.exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--compare-base"], "--compare-base needs --routers"),
        (["--template", "Q: {question} {oops}"], "template"),
        (["--batch-size", "0"], "--batch-size"),
        (["--limit", "0"], "--limit"),
    ],
    ids=["compare-without-routers", "bad-template", "batch-size", "limit"],
)
def test_bad_options_fail_cleanly(workdir, tmp_path, capsys, argv, needle):
    out_json = tmp_path / "out.json"
    rc, _, err = run_cli(
        [
            "eval",
            "--model",
            workdir["model"],
            "--data",
            workdir["data"],
            "--json",
            str(out_json),
            "--no-progress",
            *argv,
        ],
        capsys,
    )
    assert_clean_failure(rc, err, needle)
    assert not out_json.exists()


def test_lm_eval_task_bad_name_and_missing_data(workdir, tmp_path, capsys):
    rc, _, err = run_cli(
        ["lm-eval-task", "--data", workdir["data"], "--out", str(tmp_path / "t"), "--name", "a b"], capsys
    )
    assert_clean_failure(rc, err, "task name 'a b'")
    rc, _, err = run_cli(
        ["lm-eval-task", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "t")], capsys
    )
    assert_clean_failure(rc, err, "none.jsonl", "no such file")
    assert not (tmp_path / "t").exists()
