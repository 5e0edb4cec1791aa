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
    a = json.loads((tmp_path / "runs" / "roma" / "seed0" / "router_config.json").read_text())["hyperparameters"]
    b = json.loads((tmp_path / "runs" / "router_tuning" / "seed0" / "router_config.json").read_text())["hyperparameters"]
    assert {k for k in a if a[k] != b[k]} == {"regularizer"}


@needs_testbed
@pytest.mark.slow
def test_ci_sized_experiment_configuration(tmp_path, capsys):
    assert main(["experiment", str(REPO / "configs" / "ci-small.yaml"), "--out", str(tmp_path), "--no-progress"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    methods = {r["method"] for r in results["rows"]}
    assert methods == {"base", "router_tuning", "c3po", "roma", "oracle", "roma[k=1]"}
    by = {(r["method"], r["split"], r["seed"]): r["accuracy"] for r in results["rows"]}
    for (m, s, seed), acc in by.items():
        if m == "oracle":
            assert acc >= by[("base", s, seed)]
    assert (tmp_path / "table.md").is_file() and (tmp_path / "accuracy.png").is_file()
