"""The typed configuration loader: one set of rules for YAML, key=value, flags and Python."""

from __future__ import annotations

import argparse

import pytest
import torch

from moe_roma.io.config import add_config_flags, config_flags, settings
from moe_roma.io.errors import RomaError, RomaWarning
from moe_roma.methods.c3po import C3POConfig
from moe_roma.methods.registry import METHODS, method
from moe_roma.methods.roma.config import TrainConfig, train_config


def test_the_training_scorings_are_the_engines():
    from typing import get_args, get_type_hints

    from moe_roma.scoring import SCORINGS

    assert set(get_args(get_type_hints(TrainConfig)["scoring"])) == set(SCORINGS)


def test_dotted_names_and_sections_reach_the_same_setting():
    a = train_config(**{"optimizer.lr": 0.002, "regularizer.name": "l2", "scoring": "continuation"})
    b = TrainConfig.from_dict(
        {"optimizer": {"lr": 0.002}, "regularizer": {"name": "l2"}, "scoring": "continuation"}
    )
    assert a == b and a.optimizer.lr == 0.002 and a.regularizer.name == "l2" and a.scoring == "continuation"


@pytest.mark.filterwarnings("ignore::moe_roma.io.errors.RomaWarning")
def test_old_spellings_are_mapped_at_the_edges_with_a_warning_naming_the_new_key(tmp_path):
    new = train_config(**{"optimizer.lr": 0.002, "regularizer.name": "l2", "scoring": "continuation"})
    with pytest.warns(RomaWarning, match="setting 'task_loss' is now 'scoring'"):
        assert train_config(lr=0.002, regularizer="l2", task_loss="continuation") == new
    path = tmp_path / "old.yaml"
    path.write_text("lr: 0.002\nregularizer: l2\ntask_loss: continuation\n")
    with pytest.warns(RomaWarning, match="old.yaml: setting 'lr' is now 'optimizer.lr'"):
        assert TrainConfig.from_yaml(path) == new
    with pytest.warns(RomaWarning, match="setting 'lambda' is now 'regularizer.lam'"):
        assert TrainConfig().merge(["lambda=0.3"]).regularizer.lam == 0.3
    # Python's own entry point takes dotted names only: an old one is unknown, naming the new one.
    with pytest.raises(RomaError, match="unknown setting 'lr'; did you mean 'optimizer.lr'"):
        TrainConfig.from_dict({"lr": 0.002})


def test_yaml_sections_and_overrides_are_typed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "optimizer: {lr: 7e-5}\nregularizer: {name: none, lam: 2}\ngraph:\n  k: 4\nlayers: last3\n"
    )
    cfg = TrainConfig.from_yaml(path).merge(
        ["graph.k=6", "regularizer.lam_final=none", "runtime.prefix_cache=false"]
    )
    assert cfg.optimizer.lr == 7e-5 and isinstance(cfg.optimizer.lr, float)
    assert (cfg.regularizer.name, cfg.regularizer.lam, cfg.graph.k, cfg.layers) == ("none", 2.0, 6, "last3")
    assert cfg.regularizer.lam_final is None and cfg.runtime.prefix_cache is False


@pytest.mark.parametrize(
    "settings, needles",
    [
        ({"lrr": 1}, ["unknown setting 'lrr'", "did you mean 'optimizer.lr'"]),
        ({"optimizer.lrate": 1}, ["unknown setting 'optimizer.lrate'", "'optimizer.lr'"]),
        ({"graph.k": "x"}, ["'graph.k'", "an integer", "'x'"]),
        ({"graph.k": 0}, ["'graph.k'", "[1, inf]"]),
        ({"optimizer.grad_clip": -1}, ["'optimizer.grad_clip'", "[0, inf]"]),
        ({"optimizer.lr": float("nan")}, ["'optimizer.lr'", "finite"]),
        ({"regularizer.name": "magic"}, ["regularizer.name must be one of", "manifold"]),
        ({"schedule.epochs": True}, ["'schedule.epochs'", "an integer"]),
        ({"schedule.warmup_ratio": 1.5}, ["'schedule.warmup_ratio'", "[0, 1]"]),
        ({"schedule": 3}, ["unknown setting 'schedule'"]),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(settings, needles):
    with pytest.raises(RomaError) as info:
        TrainConfig.from_dict(settings)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_a_config_built_in_python_is_checked_like_a_file():
    cfg = TrainConfig()
    cfg.graph.k = -2
    with pytest.raises(RomaError, match="'graph.k'"):
        cfg.validate()


@pytest.mark.filterwarnings("ignore::moe_roma.io.errors.RomaWarning")
def test_merge_keeps_the_rest_and_round_trips_through_settings():
    base = train_config(layers="last3", optimizer={"lr": 0.003}, regularizer={"name": "none"})
    changed = base.merge(["runtime.seed=4", "regularizer.lam=0.5"])
    assert changed.runtime.seed == 4 and changed.regularizer.lam == 0.5 and changed.optimizer.lr == 0.003
    assert TrainConfig.from_dict(changed.to_dict()) == changed
    assert base.with_seed(4) == base.merge(["runtime.seed=4"])
    # The short spelling router_config.json records (and outcome keys hash) still reads back.
    with pytest.warns(RomaWarning, match="setting 'lr' is now 'optimizer.lr'"):
        assert TrainConfig.read(changed.settings()) == changed


def test_tuples_accept_lists_and_comma_strings():
    assert C3POConfig.from_dict({"alphas": "0,0.5,1"}).alphas == (0.0, 0.5, 1.0)
    assert C3POConfig.from_dict({"alphas": [1, 0.25]}).alphas == (1.0, 0.25)
    with pytest.raises(RomaError, match="alphas"):
        C3POConfig.from_dict({"alphas": [0.5, 2]})


def test_command_line_flags_are_generated_from_every_setting():
    parser = argparse.ArgumentParser()
    add_config_flags(parser, TrainConfig)
    flags = ["--optimizer.lr", "0.01", "--regularizer.name", "none", "--regularizer.lam", "0.3"]
    args = parser.parse_args([*flags, "--graph.k", "5", "--runtime.prefix-cache", "false"])
    cfg = TrainConfig.from_command_line(flags=config_flags(args))
    assert (cfg.optimizer.lr, cfg.regularizer.name, cfg.regularizer.lam, cfg.graph.k) == (
        0.01,
        "none",
        0.3,
        5,
    )
    assert cfg.runtime.prefix_cache is False
    shown = [a for a in parser._actions if a.dest.startswith("cfg__") and a.help != argparse.SUPPRESS]
    assert len(shown) == len(list(settings(TrainConfig)))
    # An old flag still works, hidden, and says its new name.
    with pytest.warns(RomaWarning, match="--lr is now --optimizer.lr"):
        old = TrainConfig.from_command_line(flags=config_flags(parser.parse_args(["--lr", "0.01"])))
    assert old.optimizer.lr == 0.01


def test_every_registered_method_has_a_config_and_a_kind():
    assert {"base", "train", "oracle", "c3po"} <= set(METHODS)
    for spec in METHODS.values():
        assert spec.kind in ("none", "weights", "test_time")
        spec.config()  # every setting has a default
        assert (spec.run is None) == (spec.kind == "none")
    with pytest.raises(RomaError, match="unknown method kind 'magic'"):
        method("magic")


def test_the_config_modules_examples_run():
    import doctest

    import moe_roma.io.config
    import moe_roma.methods.roma.config

    for module in (moe_roma.io.config, moe_roma.methods.roma.config):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_a_run_folder_saved_before_the_config_base_loads_and_reads_back_unchanged():
    """``results/sweep-downstream-large/runs/roma[paper]/seed0`` was written by the code before the one
    config base (cb92607): its routers apply to the testbed model as they are, and its recorded short
    names read back into a ``TrainConfig`` that records exactly the same settings."""
    import warnings
    from pathlib import Path

    from moe_roma.io.config import edge
    from moe_roma.methods.roma.config import TrainConfig
    from moe_roma.models.checkpoint import apply_router_checkpoint, load_router_checkpoint
    from moe_roma.models.loading import load_model
    from moe_roma.testbed import testbed_model_path

    folder = Path(__file__).resolve().parents[1] / "results/sweep-downstream-large/runs/roma[paper]/seed0"
    if not (folder / "router_config.json").is_file():
        pytest.skip(f"{folder} is not in this checkout")
    config, tensors = load_router_checkpoint(folder)
    model, _ = load_model(str(testbed_model_path("downstream")), dtype="float32", device="cpu")
    apply_router_checkpoint(model, folder)
    weights = dict(model.named_parameters())
    assert all(torch.equal(weights[name], tensor.to(weights[name].dtype)) for name, tensor in tensors.items())
    recorded = config["hyperparameters"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the short names are old spellings, mapped with a warning
        cfg = TrainConfig.from_dict(edge(TrainConfig, recorded))
    assert cfg.settings() == recorded
    assert (cfg.regularizer.lam, cfg.graph.k, cfg.optimizer.lr) == (0.8, 5, 7e-05)
