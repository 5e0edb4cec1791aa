"""The target test of `roma diagnose`: routing set to RoMA's own target and to controls, on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers.examples import make_examples
from helpers.tiny_models import build_tiny_model, build_tiny_tokenizer, save_tiny_model
from moe_roma.cli import main
from moe_roma.diagnose.target_test import score_target, target_margin, target_test
from moe_roma.diagnose.verdict import verdict
from moe_roma.manifold.graph import NeighbourSearch
from moe_roma.routing.collect import collect_routing


@pytest.fixture(scope="module")
def tiny():
    """A tiny OLMoE, 48 items collected on its last two layers, and random unit embeddings."""
    model = build_tiny_model("olmoe", num_layers=4, seed=0)
    tok = build_tiny_tokenizer()
    store, _ = collect_routing(
        model, tok, make_examples(48), layers="last2", scoring="letter", progress=False
    )
    emb = torch.nn.functional.normalize(
        torch.randn(len(store), 8, generator=torch.Generator().manual_seed(3)), dim=1
    )
    return model, tok, store, emb.numpy()


def test_the_base_pass_reproduces_the_routing_file(tiny):
    model, tok, store, emb = tiny
    res = target_test(model, tok, store, emb, progress=False)
    assert res["n"] == 48 and res["store_disagreements"] == 0 and res["routing_drift"] < 1e-4
    assert res["base"]["k"] == sum(store.is_correct)
    assert set(res["targets"]) == {"roma", "random", "same_task", "other_task", "uniform"}
    for t in res["targets"].values():  # fixed + broken account for every change against the base
        assert t["accuracy"]["k"] == res["base"]["k"] + t["fixed"]["k"] - t["broken"]["k"]
        assert t["fixed"]["n"] == 48 - res["base"]["k"] and t["broken"]["n"] == res["base"]["k"]
    assert set(res["per_task"]) == {"t0", "t1"} and sum(v["n"] for v in res["per_task"].values()) == 48


def test_a_target_equal_to_the_items_own_routing_changes_no_answer(tiny):
    """With include_self and k = 1 a successful item's target is its own routing: the override is exact, so
    no right item is broken (failed items have no self and do get moved)."""
    model, tok, store, emb = tiny
    res = target_test(model, tok, store, emb, graph=NeighbourSearch(k=1, include_self=True), progress=False)
    assert res["targets"]["roma"]["broken"]["k"] == 0
    assert res["graph"]["include_self"] is True


def test_items_of_a_second_file_take_neighbours_from_the_first(tiny):
    model, tok, store, emb = tiny
    items = store.subset(list(range(30, 48)))
    ref = store.subset(list(range(30)))
    res = target_test(model, tok, ref, emb[:30], items=items, item_embeddings=emb[30:], progress=False)
    assert res["n"] == 18 and res["items"] == "second file" and res["base"]["k"] == sum(items.is_correct)
    assert res["margin"]["too_few"]  # 18 items cannot hold 20 failed ones
    v = verdict({"cannot_tell": [], "success": {"share": 0.5}, "target_test": res})
    assert v["label"] == "cannot tell" and "too few to tell" in v["why"]


def test_a_sample_and_a_file_without_tasks(tiny):
    model, tok, store, emb = tiny
    untasked = store.subset(list(range(len(store))))
    untasked.tasks = ["default"] * len(store)
    res = target_test(model, tok, untasked, emb, n_items=20, seed=1, progress=False)
    assert res["n"] == 20 and set(res["targets"]) == {"roma", "random", "uniform"}
    assert set(res["skipped"]) == {"same_task", "other_task"} and "no tasks" in res["skipped"]["same_task"]


def test_counts_intervals_and_the_margin_by_hand():
    base = [True, True, False, False, False, False]
    under = [True, False, True, True, False, False]
    s = score_target(base, under)
    assert (s["fixed"]["k"], s["fixed"]["n"], s["broken"]["k"], s["broken"]["n"]) == (2, 4, 1, 2)
    assert s["accuracy"]["share"] == pytest.approx(0.5) and s["net"]["diff"] == pytest.approx(1 / 6)
    assert s["fixed"]["ci"][0] < 0.5 < s["fixed"]["ci"][1]
    control = [True, True, True, False, False, True]
    m = target_margin(base, under, control)  # on the 4 failed items: roma fixes items 2, 3; control 2, 5
    assert m["n_failed"] == 4 and m["too_few"] and m["fixed_diff"] == pytest.approx(0.0)
    assert m["ci"][0] < 0 < m["ci"][1]


def _tt(net: float, net_ci: tuple[float, float], margin: float, margin_ci: tuple[float, float]) -> dict:
    share = {"k": 1, "n": 2, "share": 0.5, "ci": [0.1, 0.9]}
    target = {"accuracy": share, "fixed": share, "broken": share, "net": {"diff": net, "ci": list(net_ci)}}
    return {
        "n": 400,
        "base": share,
        "targets": {"roma": target, "random": target},
        "margin": {"n_failed": 200, "too_few": False, "fixed_diff": margin, "ci": list(margin_ci)},
    }


def _report(tt: dict) -> dict:
    return {
        "cannot_tell": [],
        "success": {"share": 0.5},
        "target_test": tt,
        "correctness_signal": {"auc_routing": {"mean": 0.9}, "auc_embedding": {"mean": 0.6}},
    }


def test_the_target_test_decides_the_verdict():
    worse = verdict(_report(_tt(-0.09, (-0.14, -0.05), -0.01, (-0.07, 0.05))))
    assert worse["label"] == "unlikely to help" and "worse routing" in worse["why"]
    assert worse["secondary"]["label"] == "cannot tell"  # the indirect measures alone would not have said so
    level = verdict(_report(_tt(-0.02, (-0.08, 0.03), 0.05, (0.01, 0.09))))
    assert level["label"] == "unlikely to help" and "no better routing" in level["why"]
    no_margin = verdict(_report(_tt(0.05, (0.02, 0.08), 0.02, (-0.01, 0.05))))
    assert no_margin["label"] == "unlikely to help" and "random successful items" in no_margin["why"]
    passes = verdict(_report(_tt(0.05, (0.02, 0.08), 0.10, (0.04, 0.16))), calibration={})
    assert passes["label"] == "cannot tell" and "No measured point shows" in passes["why"]
    assert passes["caveat"].startswith("No calibration point is given")


def test_likely_to_help_only_with_a_calibration_point_where_roma_helped():
    point = {
        "target_test": {"train": {"net": 3.0, "margin": 6.0}},
        "roma_vs_router_tuning": {"x": (2.0, 0.5, 3.5)},
    }
    stronger = _report(_tt(0.05, (0.02, 0.08), 0.10, (0.04, 0.16)))
    likely = verdict(
        stronger, calibration={"control": point, "testbed": {**point, "roma_vs_router_tuning": {}}}
    )
    assert likely["label"] == "likely to help"
    assert (
        "2 calibration points" in likely["caveat"]
        and "noise at control; it did not at testbed" in likely["caveat"]
    )
    weaker = _report(_tt(0.02, (0.005, 0.04), 0.05, (0.01, 0.09)))
    assert verdict(weaker, calibration={"control": point})["label"] == "cannot tell"
    not_helped = {**point, "roma_vs_router_tuning": {"x": (2.0, -0.5, 3.5)}}
    assert verdict(stronger, calibration={"control": not_helped})["label"] == "cannot tell"


def test_the_command_writes_the_target_table_and_pictures(resume_workspace, tmp_path, capsys):
    w = resume_workspace
    out = tmp_path / "d"
    assert (
        main(
            [
                "diagnose",
                "--routing",
                str(w / "routing.json"),
                "--model",
                str(w / "model"),
                "--out",
                str(out),
                "--oracle",
                "6",
                "--no-progress",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    tt = report["target_test"]
    assert tt["n"] == 24 and tt["items"] == "the routing file's own items" and tt["graph"]["k"] == 3
    assert report["verdict"]["label"] in ("unlikely to help", "cannot tell", "likely to help")
    steering = report["oracle"]["steering"]
    assert 0 <= steering["wrong_reach"] <= 1 and steering["n_aimed"] >= 1 and steering["words"]
    md = (out / "report.md").read_text()
    assert "The target test" in md and "`roma`" in md and "wrong choice" in md and "| t0 |" in md
    assert (out / "target_test.png").stat().st_size > 1000
    assert "routing set to" in capsys.readouterr().out


def test_a_model_that_does_not_match_the_routing_file_is_refused(resume_workspace, tmp_path, capsys):
    w = resume_workspace
    save_tiny_model(tmp_path / "small", "olmoe", num_layers=2)  # the file's layers 2 and 3 are not in it
    code = main(
        [
            "diagnose",
            "--routing",
            str(w / "routing.json"),
            "--model",
            str(tmp_path / "small"),
            "--out",
            str(tmp_path / "d"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "layers [2, 3] are not MoE layers" in err, err
    assert not (tmp_path / "d" / "report.json").exists()


@pytest.mark.parametrize("flags", [["--items", "x.json"], ["--gate-items", "5"], ["--oracle", "5"]])
def test_model_options_without_a_model_are_one_sentence(resume_workspace, tmp_path, capsys, flags):
    code = main(
        [
            "diagnose",
            "--routing",
            str(resume_workspace / "routing.json"),
            "--out",
            str(tmp_path / "d"),
            *flags,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "needs --model" in err and flags[0] in err
    assert not (tmp_path / "d").exists()


def test_oracle_aimed_at_the_true_answers_is_the_plain_oracle(tiny):
    from moe_roma.methods.oracle import oracle_routing

    model, tok, store, _ = tiny
    sample = store.subset(list(range(12)))
    plain = oracle_routing(model, tok, sample, steps=3, progress=False)
    aimed = oracle_routing(model, tok, sample, steps=3, progress=False, aim=sample.answer_index)
    assert aimed.correct_after == plain.correct_after and aimed.predictions_after == plain.predictions_after
    wrong = [(a + 1) % len(c) for a, c in zip(sample.answer_index, sample.choices)]
    other = oracle_routing(model, tok, sample, steps=3, progress=False, aim=wrong)
    assert other.correct_after == [p == a for p, a in zip(other.predictions_after, wrong)]
    assert np.isfinite(other.accuracy)
