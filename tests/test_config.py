"""The typed configuration loader: one set of rules for YAML, key=value, flags and Python."""

from __future__ import annotations

import argparse

import pytest

from moe_roma.io.config import add_config_arguments, build_config, config_arguments, load_config, settings
from moe_roma.io.errors import RomaError
from moe_roma.methods.c3po import C3POConfig
from moe_roma.methods.registry import METHODS, method
from moe_roma.methods.roma.config import TrainConfig, train_config


def test_the_training_scorings_are_the_engines():
    from typing import get_args, get_type_hints

    from moe_roma.scoring import SCORINGS

    assert set(get_args(get_type_hints(TrainConfig)["scoring"])) == set(SCORINGS)


def test_dotted_leaf_and_legacy_names_reach_the_same_setting():
    a = train_config(**{"optimizer.lr": 0.002, "regularizer.name": "l2", "scoring": "continuation"})
    b = train_config(lr=0.002, regularizer="l2", task_loss="continuation")
    assert a == b and a.optimizer.lr == 0.002 and a.regularizer.name == "l2" and a.scoring == "continuation"


def test_yaml_sections_and_overrides_are_typed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "optimizer: {lr: 7e-5}\nregularizer: {name: none, lam: 2}\ngraph:\n  k: 4\nlayers: last3\n"
    )
    cfg = load_config(TrainConfig, path, ["graph.k=6", "lam_final=none", "prefix_cache=false"])
    assert cfg.optimizer.lr == 7e-5 and isinstance(cfg.optimizer.lr, float)
    assert (cfg.regularizer.name, cfg.regularizer.lam, cfg.graph.k, cfg.layers) == ("none", 2.0, 6, "last3")
    assert cfg.regularizer.lam_final is None and cfg.runtime.prefix_cache is False


@pytest.mark.parametrize(
    "settings, needles",
    [
        ({"lrr": 1}, ["unknown setting 'lrr'", "did you mean 'lr'"]),
        ({"optimizer.lrate": 1}, ["unknown setting 'optimizer.lrate'", "'optimizer.lr'"]),
        ({"k": "x"}, ["'k'", "an integer", "'x'"]),
        ({"k": 0}, ["'k'", "[1, inf]"]),
        ({"grad_clip": -1}, ["'grad_clip'", "[0, inf]"]),
        ({"lr": float("nan")}, ["'lr'", "finite"]),
        ({"regularizer": "magic"}, ["regularizer must be one of", "manifold"]),
        ({"epochs": True}, ["'epochs'", "an integer"]),
        ({"warmup_ratio": 1.5}, ["'warmup_ratio'", "[0, 1]"]),
        ({"schedule": 3}, ["unknown setting 'schedule'"]),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(settings, needles):
    with pytest.raises(RomaError) as info:
        train_config(**settings)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_a_config_built_in_python_is_checked_like_a_file():
    cfg = TrainConfig()
    cfg.graph.k = -2
    with pytest.raises(RomaError, match="'graph.k'"):
        cfg.validate()


def test_replace_keeps_the_rest_and_round_trips_through_settings():
    base = train_config(lr=0.003, layers="last3", regularizer="none")
    changed = base.replace(seed=4, lam=0.5)
    assert changed.runtime.seed == 4 and changed.regularizer.lam == 0.5 and changed.optimizer.lr == 0.003
    assert build_config(TrainConfig, changed.settings()) == changed


def test_tuples_accept_lists_and_comma_strings():
    assert build_config(C3POConfig, {"alphas": "0,0.5,1"}).alphas == (0.0, 0.5, 1.0)
    assert build_config(C3POConfig, {"alphas": [1, 0.25]}).alphas == (1.0, 0.25)
    with pytest.raises(RomaError, match="alphas"):
        build_config(C3POConfig, {"alphas": [0.5, 2]})


def test_command_line_flags_are_generated_from_every_setting():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, TrainConfig)
    args = parser.parse_args(
        ["--lr", "0.01", "--regularizer", "none", "--lambda", "0.3", "--k", "5", "--prefix-cache", "false"]
    )
    cfg = build_config(TrainConfig, config_arguments(args))
    assert (cfg.optimizer.lr, cfg.regularizer.name, cfg.regularizer.lam, cfg.graph.k) == (
        0.01,
        "none",
        0.3,
        5,
    )
    assert cfg.runtime.prefix_cache is False
    flags = {a.dest for a in parser._actions}
    assert len([d for d in flags if d.startswith("cfg__")]) == len(list(settings(TrainConfig)))


def test_every_registered_method_has_a_config_and_a_kind():
    assert {"base", "train", "oracle", "c3po"} <= set(METHODS)
    for spec in METHODS.values():
        assert spec.kind in ("none", "weights", "test_time")
        spec.config()  # every setting has a default
        assert (spec.run is None) == (spec.kind == "none")
    with pytest.raises(RomaError, match="unknown method kind 'magic'"):
        method("magic")
