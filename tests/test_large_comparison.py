"""scripts/large_comparison.py: the train_large comparison and size curve read as experiments."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import yaml

from helpers.scripts import load_script
from moe_roma.experiments.config import ExperimentConfig
from moe_roma.io.errors import RomaWarning
from moe_roma.training.schedules import resolve_warmup

ROOT = Path(__file__).resolve().parents[1]


def _fake_sweep_results(folder: Path, best: dict[str, str]) -> None:
    sweep = yaml.safe_load((ROOT / "configs" / "sweep-downstream-large.yaml").read_text())
    rows = [
        {
            "method": m["name"],
            "split": "validation",
            "accuracy": 0.9 if m["name"] in best.values() else 0.5,
            "n": 240,
        }
        for m in sweep["methods"]
    ]
    (folder / "results.json").write_text(json.dumps({"rows": rows}))


def test_the_comparison_and_the_size_curve_follow_the_picks_and_read_without_old_names(tmp_path):
    script = load_script("large_comparison")
    picks = {"router_tuning": "router_tuning[lr=3e-4,paper]", "roma": "roma[paper,lam=3]"}
    _fake_sweep_results(tmp_path, picks)
    compare_path, curve_path = script.main(tmp_path, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RomaWarning)  # an old spelling would warn
        compare = ExperimentConfig.from_yaml(compare_path)
        curve = ExperimentConfig.from_yaml(curve_path)
        compare_methods = {m.name: m for m in compare.grid()}
        curve_methods = {m.name: m for m in curve.grid()}
    assert list(compare_methods) == [
        "base",
        "router_tuning",
        "roma",
        "roma_paper",
        "roma[random_neighbours]",
        "roma[tfidf]",
    ]
    assert compare_methods["router_tuning"].config.optimizer.lr == 3e-4
    assert compare_methods["roma"].config.regularizer.lam == 3.0
    assert compare_methods["roma[tfidf]"].config.graph.embedder == "tfidf"
    assert compare_methods["roma[random_neighbours]"].config.graph.random_neighbours is True
    assert compare.seeds == [0, 1, 2, 3, 4]

    fractions = sorted(m.train_fraction for m in curve_methods.values() if m.name.startswith("roma"))
    # The full size is not trained again: it is the comparison's seeds 0-2.
    assert fractions == [round(n / 49_000, 6) for n in (960, 5_000, 15_000)]
    assert curve.seeds == [0, 1, 2] and set(curve.seeds) <= set(compare.seeds)
    small = curve_methods["roma[n=960]"].config
    steps = script.full_steps(yaml.safe_load(compare_path.read_text())["train"])
    # The pick's 2000-step warm-ups become the same share of a full run's steps.
    sched = small.schedule
    assert resolve_warmup(sched.warmup_steps, sched.warmup_ratio, steps) == 2000
    reg = small.regularizer
    assert resolve_warmup(reg.lam_warmup_steps, reg.lam_warmup_ratio, steps) == 2000
    assert small.regularizer.lam == 3.0 and curve_methods["router_tuning[n=5000]"].config.optimizer.lr == 3e-4


def _write_outcomes(folder: Path, runs: dict[str, dict[str, list[bool]]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"run": run, "outcome": {"splits": {s: {"correct": c} for s, c in splits.items()}}})
        for run, splits in runs.items()
    ]
    (folder / "outcomes.jsonl").write_text("\n".join(lines) + "\n")


def _curve_args(folder: Path) -> list[str]:
    return [
        *("--curve", str(folder / "curve"), "--compare", str(folder / "compare")),
        *("--configs", str(folder), "--out", str(folder / "summary")),
    ]


def _flags(k: int, n: int = 10) -> list[bool]:
    return [i < k for i in range(n)]


def test_the_size_curve_joins_the_comparisons_full_size_and_pairs_roma_with_router_tuning(tmp_path):
    script, curve = load_script("large_comparison"), load_script("size_curve")
    _fake_sweep_results(
        tmp_path, {"router_tuning": "router_tuning[lr=3e-4,paper]", "roma": "roma[paper,lam=3]"}
    )
    script.main(tmp_path, tmp_path)
    splits = ("shifted", "heldout_tasks")
    # RoMA is right on 6 of 10 items at every size, router tuning on 4, except at the full size: 5.
    small = {
        f"{f}[n={n}]/seed{s}": {sp: _flags(6 if f == "roma" else 4) for sp in splits}
        for f in ("router_tuning", "roma")
        for n in (960, 5000, 15000)
        for s in (0, 1, 2)
    }
    _write_outcomes(tmp_path / "curve", {"base": {sp: _flags(3) for sp in splits}, **small})
    full = {
        f"{f}/seed{s}": {sp: _flags(5) for sp in splits} for f in ("router_tuning", "roma") for s in range(5)
    }
    _write_outcomes(tmp_path / "compare", {"base": {sp: _flags(3) for sp in splits}, **full})
    args = _curve_args(tmp_path)
    assert curve.main(args) == 0
    summary = json.loads((tmp_path / "summary" / "size_curve.json").read_text())
    gap = {(g["n"], g["split"]): g["mean_diff"] for g in summary["gaps"]}
    assert gap[960, "shifted"] == pytest.approx(0.2) and gap[49_000, "heldout_tasks"] == 0.0
    assert summary["base"]["shifted"] == 0.3
    table = (tmp_path / "summary" / "size_curve.md").read_text()
    assert "| 960 | 40.0 [40.0, 40.0] | 60.0 [60.0, 60.0] | +20.0 [+20.0, +20.0] | 0 of 3 |" in table
    assert "| 49,000 | 50.0 [50.0, 50.0] | 50.0 [50.0, 50.0] | +0.0 [+0.0, +0.0] | 0 of 3 |" in table
    assert (tmp_path / "summary" / "size_curve.png").stat().st_size > 0
    # Nothing lands in the curve's experiment folder, whose --resume refuses files not its own.
    assert sorted(p.name for p in (tmp_path / "curve").iterdir()) == ["outcomes.jsonl"]


def test_the_size_curve_refuses_missing_runs_and_settings_that_differ(tmp_path, capsys):
    script, curve = load_script("large_comparison"), load_script("size_curve")
    _fake_sweep_results(
        tmp_path, {"router_tuning": "router_tuning[lr=3e-4,paper]", "roma": "roma[paper,lam=3]"}
    )
    script.main(tmp_path, tmp_path)
    _write_outcomes(tmp_path / "curve", {"base": {"shifted": [True], "heldout_tasks": [True]}})
    _write_outcomes(tmp_path / "compare", {})
    args = _curve_args(tmp_path)
    assert curve.main(args) == 2
    assert "runs missing from the outcomes: roma/seed0" in capsys.readouterr().err
    assert not (tmp_path / "summary").exists()

    from moe_roma.io.lock import FolderLock

    with FolderLock(tmp_path / "curve", "roma experiment"):  # the curve's experiment is still running
        assert curve.main(args) == 2
    err = capsys.readouterr().err
    assert "in use by" in err and "(roma experiment)" in err and err.count("\n") == 1

    path = tmp_path / "size-curve-downstream-large.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["methods"][1]["overrides"]["optimizer.lr"] = 0.5  # no longer the comparison's pick
    path.write_text(yaml.safe_dump(cfg))
    assert curve.main(args) == 2
    err = capsys.readouterr().err
    assert "does not train as the comparison's router_tuning" in err and err.count("\n") == 1
