"""The verdict of `roma diagnose`: its rule, its calibration points, and the real downstream testbed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moe_roma.diagnose.verdict import CALIBRATION, PULL_MARGIN_MAX, ROUTING_MARGIN_MAX, helped, verdict

ROOT = Path(__file__).resolve().parents[1]


def report(auc_routing: float, auc_embedding: float, share: float = 0.6, pull: float | None = None) -> dict:
    out = {
        "cannot_tell": [],
        "success": {"share": share},
        "correctness_signal": {
            "auc_routing": {"mean": auc_routing},
            "auc_embedding": {"mean": auc_embedding},
        },
    }
    if pull is not None:
        out["oracle"] = {"direction": {"cos_change_pull": 0.1 + pull, "cos_change_random_pull": 0.1}}
    return out


def test_routing_no_better_than_the_question_is_unlikely_to_help():
    v = verdict(report(0.66, 0.72))
    assert v["label"] == "unlikely to help" and "0.660" in v["why"] and "0.720" in v["why"]
    assert v["drivers"]["routing_margin"] == pytest.approx(-0.06) and "calibration points" in v["caveat"]


def test_outside_the_calibration_it_cannot_tell_and_never_says_likely():
    assert verdict(report(0.85, 0.70))["label"] == "cannot tell"
    assert (
        verdict(report(0.66, 0.72, pull=0.2))["label"] == "cannot tell"
    )  # the oracle goes where neighbours pull
    assert verdict(report(0.66, 0.72, pull=0.0))["label"] == "unlikely to help"


def test_cannot_tell_passes_its_reasons_on():
    v = verdict({"cannot_tell": ["only 12 items; at least 20 are needed"], "success": {"share": 0.5}})
    assert v["label"] == "cannot tell" and "only 12 items" in v["why"]


TESTBEDS = sorted(n for n in CALIBRATION if not n.startswith("control"))
CONTROL = sorted(n for n in CALIBRATION if n.startswith("control"))


@pytest.mark.parametrize("name", TESTBEDS)
def test_each_calibration_point_gets_the_verdict_its_measured_outcome_supports(name):
    point = CALIBRATION[name]
    assert point["routing_margin"] == pytest.approx(point["auc_routing"] - point["auc_embedding"], abs=1e-3)
    assert point["routing_margin"] <= ROUTING_MARGIN_MAX and point["pull_margin"] <= PULL_MARGIN_MAX
    assert not helped(point)  # no split where RoMA's interval over router tuning lies above 0
    v = verdict(
        report(point["auc_routing"], point["auc_embedding"], point["successful_share"], point["pull_margin"])
    )
    assert v["label"] == "unlikely to help"


@pytest.mark.parametrize("name", sorted(CALIBRATION))
def test_the_calibration_outcomes_are_the_committed_tables(name):
    """The outcome beside each calibration point is what `roma experiment` wrote, not a typed-in number."""
    point = CALIBRATION[name]
    path = ROOT / point["table"] / "results.json"
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    paired = json.loads(path.read_text())["paired"]
    # A control dose compares RoMA at lambda 0.8 on its marked splits (docs/control.md, "Readouts").
    roma, suffix = ("roma_lam0.8", "_marked") if name in CONTROL else ("roma", "")
    for split, (mean, low, high) in point["roma_vs_router_tuning"].items():
        key = (roma, "router_tuning", split + suffix)
        row = next(p for p in paired if (p["a"], p["b"], p["split"]) == key)
        assert [round(100 * x, 1) for x in (row["mean_diff"], *row["ci"])] == [mean, low, high], (name, split)


@pytest.mark.slow
def test_the_downstream_testbed_measures_as_calibrated(tmp_path):
    """Collect the downstream testbed's RoMA training set and diagnose it: the calibration numbers return."""
    from moe_roma.diagnose.run import diagnose_routing
    from moe_roma.models.loading import load_model
    from moe_roma.routing.collect import collect_routing
    from moe_roma.testbed import load_testbed_splits, testbed_model_path

    model, tok = load_model(str(testbed_model_path("downstream")), dtype="float32", device="cpu")
    train = load_testbed_splits(0, testbed="downstream")["train"]
    store, _ = collect_routing(
        model, tok, train, layers="last5", scoring="continuation", batch_size=32, progress=False
    )
    out = diagnose_routing(store, top_k=4)
    point = CALIBRATION["downstream"]
    # The target test on in_dist, neighbours from the training set: the table and the calibration.
    from moe_roma.diagnose.target_test import target_test
    from moe_roma.manifold.embed import embed_texts

    in_dist, _ = collect_routing(
        model,
        tok,
        load_testbed_splits(0, testbed="downstream")["in_dist"],
        layers="last5",
        scoring="continuation",
        batch_size=32,
        progress=False,
    )
    tt = target_test(
        model,
        tok,
        store,
        out["_embeddings"],
        items=in_dist,
        item_embeddings=embed_texts(list(in_dist.questions)),
        batch_size=32,
        progress=False,
    )
    measured = point["target_test"]["in_dist"]
    assert 100 * tt["base"]["share"] == pytest.approx(measured["base"], abs=0.1)
    assert 100 * tt["targets"]["roma"]["accuracy"]["share"] == pytest.approx(measured["roma"], abs=1.0)
    assert 100 * tt["margin"]["fixed_diff"] == pytest.approx(measured["margin"], abs=2.0)
    assert out["success"]["share"] == pytest.approx(point["successful_share"], abs=1e-3)
    assert out["correctness_signal"]["auc_routing"]["mean"] == pytest.approx(point["auc_routing"], abs=2e-3)
    assert out["correctness_signal"]["auc_embedding"]["mean"] == pytest.approx(
        point["auc_embedding"], abs=2e-3
    )
    assert out["verdict"]["label"] == "unlikely to help"
    assert verdict({**out, "target_test": tt})["label"] == "unlikely to help"


@pytest.mark.parametrize("name", CONTROL)
def test_each_control_point_is_its_committed_diagnose_report_and_gates(name):
    """A control dose's point is its `roma diagnose` report (the RoMA training set) and its gates' target
    test on the held-out marked items, as committed; and the verdict on that report is what it supports."""
    point, dose = CALIBRATION[name], name.split()[-1]
    report_path = ROOT / "results" / "control" / "diagnose" / dose / "report.json"
    gates_path = ROOT / "results" / "control" / "doses" / f"{dose}.json"
    if not (report_path.is_file() and gates_path.is_file()):
        pytest.skip(f"{report_path} or {gates_path} is not in this checkout")
    report, gates = json.loads(report_path.read_text()), json.loads(gates_path.read_text())
    tt, held = report["target_test"], gates["target_test"]
    assert point["successful_share"] == pytest.approx(report["success"]["share"], abs=1e-3)
    train = point["target_test"]["train"]
    assert train["net"] == pytest.approx(100 * tt["targets"]["roma"]["net"]["diff"], abs=0.051)
    assert train["margin"] == pytest.approx(100 * tt["margin"]["fixed_diff"], abs=0.051)
    marked = point["target_test"]["marked"]
    assert marked["net"] == pytest.approx(100 * held["targets"]["roma"]["net"]["diff"], abs=0.051)
    assert marked["margin"] == pytest.approx(100 * held["margin"]["fixed_diff"], abs=0.051)
    label = verdict(report)["label"]
    assert label != "likely to help" or helped(point)
