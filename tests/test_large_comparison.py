"""scripts/large_comparison.py: the train_large comparison and size curve read as experiments."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import yaml

from moe_roma.experiments.config import ExperimentConfig
from moe_roma.io.errors import RomaWarning
from moe_roma.training.schedules import resolve_warmup

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "large_comparison", ROOT / "scripts" / "large_comparison.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    script = _script()
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
    assert fractions == [round(n / 49_000, 6) for n in (960, 5_000, 15_000)] + [1.0]
    full = curve_methods["roma[n=49000]"].config
    steps = script.full_steps(yaml.safe_load(compare_path.read_text())["train"])
    # The full size warms up over the pick's 2000 steps, now given as a share of the steps.
    sched = full.schedule
    assert resolve_warmup(sched.warmup_steps, sched.warmup_ratio, steps) == 2000
    reg = full.regularizer
    assert resolve_warmup(reg.lam_warmup_steps, reg.lam_warmup_ratio, steps) == 2000
