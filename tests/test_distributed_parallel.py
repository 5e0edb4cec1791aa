"""Data-parallel collection and evaluation (2 gloo processes) write the file one process writes, and a
bad job (mismatched arguments, a batch the world size does not divide, a rank that dies) stops with one
sentence from rank 0, exit 2, and nothing half-written."""

from __future__ import annotations

import json

import pytest
import torch

from helpers.ranks import roma, roma_killed_at, run_ranks
from moe_roma.cli import main
from moe_roma.routing.store import load_routing_store


@pytest.mark.slow
def test_data_parallel_collect_and_eval_write_the_single_process_files(resume_workspace, tmp_path):
    w = resume_workspace
    common = ["--model", str(w / "model"), "--data", str(w / "train.jsonl"), "--no-progress"]
    collect = ["collect", *common, "--layers", "last2", "--batch-size", "5"]
    evaluate = ["eval", *common, "--scoring", "letter"]
    assert main([*collect, "--out", str(tmp_path / "one.json")]) == 0
    assert main([*evaluate, "--predictions", str(tmp_path / "one.jsonl")]) == 0
    for argv in (
        [*collect, "--out", str(tmp_path / "two.json")],
        [*evaluate, "--predictions", str(tmp_path / "two.jsonl")],
    ):
        ranks = run_ranks([roma(*argv)] * 2)
        assert [r.returncode for r in ranks] == [0, 0], ranks[0].stderr[-2000:] + ranks[1].stderr[-2000:]
    one, two = (load_routing_store(tmp_path / f"{n}.json") for n in ("one", "two"))
    # Same items in the same order with the same answers and metadata; the routing within float tolerance.
    assert list(json.loads((tmp_path / "two.json").read_text())) == list(
        json.loads((tmp_path / "one.json").read_text())
    )
    for field in (
        "ids",
        "input_texts",
        "layers",
        "answer_index",
        "model_answer",
        "is_correct",
        "token_ids",
        "choices",
        "tasks",
        "meta",
    ):
        assert getattr(two, field) == getattr(one, field), field
    torch.testing.assert_close(two.routing, one.routing, rtol=1e-4, atol=1e-5)
    rows = [
        [json.loads(x) for x in (tmp_path / f"{n}.jsonl").read_text().splitlines()] for n in ("one", "two")
    ]
    assert len(rows[0]) == 24 and [r["id"] for r in rows[0]] == [r["id"] for r in rows[1]]
    for a, b in zip(*rows):
        assert a["pred"] == b["pred"]
        torch.testing.assert_close(torch.tensor(b["scores"]), torch.tensor(a["scores"]), rtol=1e-4, atol=1e-5)


def _train(w, out, *extra):
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
        "--layers",
        "last2",
        "--no-progress",
        "--shard",
        "fsdp",
        "graph.dedupe_threshold=1.01",
        *extra,
    ]


def _one_sentence_from_rank_0(ranks, *words):
    assert ranks[0].returncode == 2, ranks[0].stderr[-2000:]
    errors = [line for line in ranks[0].stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and all(w in errors[0] for w in words), ranks[0].stderr[-2000:]
    return errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["mismatched", "indivisible"])
def test_a_job_refused_alike_on_every_rank_speaks_once(resume_workspace, tmp_path, case):
    out = tmp_path / "run"
    if case == "mismatched":
        argvs = [
            roma(*_train(resume_workspace, out, "--optimizer.lr", "0.02")),
            roma(*_train(resume_workspace, out, "--optimizer.lr", "0.03")),
        ]
        words = ("different arguments", "optimizer.lr", "rank 1")
    else:
        argvs = [roma(*_train(resume_workspace, out, "--schedule.batch-size", "5"))] * 2
        words = ("batch_size 5", "not divisible", "2 processes")
    ranks = run_ranks(argvs)
    _one_sentence_from_rank_0(ranks, *words)
    assert ranks[1].returncode == 2 and ": error: " not in ranks[1].stderr  # rank 0 speaks for the job
    assert not out.exists()


@pytest.mark.slow
def test_a_rank_that_dies_stops_the_others_with_one_sentence(resume_workspace, tmp_path):
    out = tmp_path / "run"
    args = _train(resume_workspace, out, "--dist-timeout", "120")
    # Rank 1 is SIGKILLed just before its third optimiser step; rank 0 is then waiting on it in a collective.
    ranks = run_ranks(
        [
            roma(*args),
            roma_killed_at("moe_roma.methods.roma.trainer:RouterTrainer.apply_step", 3, "before", *args),
        ]
    )
    assert ranks[1].returncode == -9
    _one_sentence_from_rank_0(ranks, "another process", "stopped", "nothing of this run was kept")
    assert not out.exists()


def test_device_map_auto_scores_like_a_single_device(resume_workspace, tmp_path, capsys):
    # Without a GPU accelerate places every layer on the CPU: the same numbers through its placement path.
    pytest.importorskip("accelerate")
    common = [
        "eval",
        "--model",
        str(resume_workspace / "model"),
        "--data",
        str(resume_workspace / "train.jsonl"),
        "--scoring",
        "letter",
        "--no-progress",
    ]
    assert main([*common, "--predictions", str(tmp_path / "one.jsonl")]) == 0
    assert main([*common, "--device-map", "auto", "--predictions", str(tmp_path / "auto.jsonl")]) == 0
    one, auto = (
        [json.loads(x) for x in (tmp_path / f"{n}.jsonl").read_text().splitlines()] for n in ("one", "auto")
    )
    assert [r["pred"] for r in one] == [r["pred"] for r in auto] and len(one) == 24
    for a, b in zip(one, auto):
        torch.testing.assert_close(torch.tensor(b["scores"]), torch.tensor(a["scores"]), rtol=1e-5, atol=1e-6)
    capsys.readouterr()
    assert main([*common, "--device-map", "auto", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "contradict" in err[0], err
