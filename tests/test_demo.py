"""The main job on the bundled testbed: ``roma demo`` and the CI-sized experiment configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moe_roma.cli import main
from moe_roma.testbed import testbed_model_path

REPO = Path(__file__).resolve().parents[1]
needs_testbed = pytest.mark.skipif(
    not (testbed_model_path() / "config.json").is_file(), reason="the bundled testbed model is not built"
)


@needs_testbed
@pytest.mark.slow
def test_demo_runs_end_to_end_and_writes_results_report_and_plots(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["rows"]
    assert {(r["method"], r["split"]) for r in rows} == {
        (m, s) for m in ("base", "router_tuning", "roma") for s in ("in_dist", "shifted", "heldout_tasks")
    }
    for r in rows:
        assert set(r) >= {"method", "split", "seed", "accuracy", "n"} and r["n"] > 0
    assert results["package_version"] and results["config"]["train_config"]["regularizer"] == "manifold"
    for name in ("report.md", "training_curves.png", "expert_utilisation.png", "routing_pca.png"):
        assert (tmp_path / name).stat().st_size > 500, name
    assert "router_tuning" in out and "heldout_tasks" in out
    # Same hyper-parameters for both trained methods: only the regulariser differs.
    a = json.loads((tmp_path / "runs" / "roma" / "seed0" / "router_config.json").read_text())[
        "hyperparameters"
    ]
    b = json.loads((tmp_path / "runs" / "router_tuning" / "seed0" / "router_config.json").read_text())[
        "hyperparameters"
    ]
    assert {k for k in a if a[k] != b[k]} == {"regularizer"}


@needs_testbed
@pytest.mark.slow
def test_ci_sized_experiment_configuration(tmp_path, capsys):
    assert (
        main(["experiment", str(REPO / "configs" / "ci-small.yaml"), "--out", str(tmp_path), "--no-progress"])
        == 0
    )
    results = json.loads((tmp_path / "results.json").read_text())
    methods = {r["method"] for r in results["rows"]}
    assert methods == {"base", "router_tuning", "c3po", "roma", "oracle", "roma[k=1]"}
    by = {(r["method"], r["split"], r["seed"]): r["accuracy"] for r in results["rows"]}
    for (m, s, seed), acc in by.items():
        if m == "oracle":
            assert acc >= by[("base", s, seed)]
    assert (tmp_path / "table.md").is_file() and (tmp_path / "accuracy.png").is_file()


needs_downstream = pytest.mark.skipif(
    not (testbed_model_path("downstream") / "config.json").is_file(),
    reason="the downstream testbed model is not built",
)


@needs_downstream
@pytest.mark.slow
def test_ci_sized_downstream_comparison(tmp_path):
    """configs/ci-downstream.yaml: every method of the downstream paper table, two seeds, at CI size."""
    assert (
        main(
            [
                "experiment",
                str(REPO / "configs" / "ci-downstream.yaml"),
                "--out",
                str(tmp_path),
                "--no-progress",
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "results.json").read_text())
    names = ("base", "router_tuning", "roma", "roma_oracle", "c3po_kernel", "c3po_ngd", "oracle")
    splits = ("in_dist", "shifted", "heldout_tasks")
    by = {(r["method"], r["split"], r["seed"]): r for r in results["rows"]}
    assert set(by) == {(m, s, seed) for m in names for s in splits for seed in (0, 1)}
    for (m, s, seed), row in by.items():
        assert row["n"] == 40 and 0.0 <= row["accuracy"] <= 1.0
        if m == "oracle":  # the oracle keeps the base routing wherever it cannot do better
            assert row["accuracy"] >= by[("base", s, seed)]["accuracy"]
    assert {(p["a"], p["b"], p["split"]) for p in results["paired"]} == {
        (a, b, s)
        for a, b in (
            ("roma", "base"),
            ("roma", "router_tuning"),
            ("roma_oracle", "base"),
            ("roma_oracle", "router_tuning"),
        )
        for s in splits
    }
    for p in results["paired"]:
        assert len(p["per_seed"]) == 2 and all(0.0 <= x["p_value"] <= 1.0 for x in p["per_seed"])
    assert (tmp_path / "table.md").is_file() and (tmp_path / "accuracy.png").is_file()


def test_each_testbed_has_its_own_demo_file_naming_it():
    from moe_roma.experiments.config import ExperimentConfig
    from moe_roma.experiments.demo import DEMO_CONFIG, DEMO_CONFIGS

    assert DEMO_CONFIGS["downstream"] == DEMO_CONFIG  # `roma demo` runs the downstream testbed by default
    for testbed, path in DEMO_CONFIGS.items():
        assert ExperimentConfig.from_yaml(path).data.testbed == testbed, path


def test_an_unknown_demo_testbed_is_one_sentence(capsys):
    from moe_roma.experiments.demo import run_demo
    from moe_roma.io.errors import RomaError

    with pytest.raises(RomaError, match="unknown testbed 'nope'"):
        run_demo("unused", testbed="nope")
