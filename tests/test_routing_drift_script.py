"""scripts/routing_drift.py: how far tuned routers move each split's routing from the base model's."""

from __future__ import annotations

import json

import torch

from helpers.examples import make_examples, write_data
from helpers.scripts import load_script
from helpers.tiny_models import save_tiny_model
from moe_roma.models.checkpoint import apply_router_checkpoint, save_router_checkpoint
from moe_roma.models.discovery import discover_routers
from moe_roma.models.loading import load_model
from moe_roma.scoring.engine import evaluate


def test_routers_left_as_they_are_do_not_drift_and_changed_ones_do(tmp_path, capsys):
    model_dir = save_tiny_model(tmp_path / "model", "olmoe", num_layers=4)
    examples = make_examples(24)
    write_data(tmp_path / "a.jsonl", examples[:12])
    write_data(tmp_path / "b.jsonl", examples[12:])
    model, _ = load_model(model_dir)
    info = discover_routers(model)
    layers = info.moe_layers[-2:]
    save_router_checkpoint(model, info, layers, tmp_path / "m" / "seed0")
    torch.manual_seed(1)
    with torch.no_grad():
        for layer in layers:
            for p in info.routers[layer].parameters():
                p.add_(torch.randn_like(p) * 3)
    save_router_checkpoint(model, info, layers, tmp_path / "m" / "seed1")
    data = ["--data", f"a={tmp_path / 'a.jsonl'}", "--data", f"b={tmp_path / 'b.jsonl'}"]
    out = tmp_path / "drift.json"
    argv = [
        str(tmp_path / "m" / "seed0"),
        str(tmp_path / "m" / "seed1"),
        "--model",
        str(model_dir),
        *data,
        "--json",
        str(out),
    ]
    assert load_script("routing_drift").main(argv) == 0
    figures = json.loads(out.read_text())
    same, moved = figures[str(tmp_path / "m" / "seed0")], figures[str(tmp_path / "m" / "seed1")]
    for split in ("a", "b"):
        assert same[split]["tv"] == 0 and same[split]["topk_changed"] == 0
        assert same[split]["answers_changed"] == 0 and same[split]["n"] == 12
        assert same[split]["tuned_accuracy"] == same[split]["base_accuracy"]
        assert 0.05 < moved[split]["tv"] <= 1 and moved[split]["topk_changed"] > 0
    # The moved routers' accuracy is what scoring the model with them applied gives.
    base_model, tok = load_model(model_dir)
    apply_router_checkpoint(base_model, tmp_path / "m" / "seed1")
    scored = evaluate(base_model, tok, examples[:12], scoring="continuation", progress=False)
    assert moved["a"]["tuned_accuracy"] == scored.acc
    printed = capsys.readouterr().out
    # An existing --json is replaced only with --overwrite, and refused before any model loads.
    assert load_script("routing_drift").main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert f"| {tmp_path / 'm' / 'seed1'} | {moved['a']['tv']:.3f} / " in printed
    # Two seed folders of one method: their mean, in a second table.
    assert f"| {tmp_path / 'm'} (2 seeds) | {moved['a']['tv'] / 2:.3f} / " in printed.split("Mean over")[1]


def test_a_malformed_data_option_is_one_sentence(tmp_path, capsys):
    assert load_script("routing_drift").main([str(tmp_path), "--model", "m", "--data", "no-equals-sign"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--data no-equals-sign: expected SPLIT=FILE" in err
