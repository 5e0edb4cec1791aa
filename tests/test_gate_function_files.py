"""Files record a router's gate function (softmax or sigmoid) as ``gate_function``; files written
before it had that name call it ``scoring_rule`` and still read the same."""

from __future__ import annotations

import json

from helpers.tiny_models import build_tiny_model, build_tiny_tokenizer
from moe_roma.data.example import MCExample
from moe_roma.io.tensorfile import load_tensors, save_tensors
from moe_roma.models.checkpoint import CONFIG_NAME, load_router_checkpoint, save_router_checkpoint
from moe_roma.models.discovery import discover_routers
from moe_roma.routing.collect import collect_routing
from moe_roma.routing.store import load_routing_store, save_routing_store, sidecar_path


def test_router_checkpoints_old_and_new_name_the_gate_function(tmp_path):
    model = build_tiny_model("deepseek_v3")
    info = discover_routers(model)
    folder = save_router_checkpoint(model, info, info.moe_layers[-1:], tmp_path / "ckpt")
    assert load_router_checkpoint(folder)[0]["gate_function"] == "sigmoid"
    config_path = folder / CONFIG_NAME
    config = json.loads(config_path.read_text())
    config["scoring_rule"] = config.pop("gate_function")  # as written before the rename
    config_path.write_text(json.dumps(config))
    config, _ = load_router_checkpoint(folder)
    assert config["gate_function"] == "sigmoid" and "scoring_rule" not in config


def test_routing_stores_old_and_new_name_the_gate_function(tmp_path):
    model, tok = build_tiny_model("olmoe"), build_tiny_tokenizer()
    examples = [MCExample(f"s{i}", "what is one two ?", ("red", "blue", "cat"), i % 3) for i in range(3)]
    store, _ = collect_routing(model, tok, examples, layers="last2", progress=False)
    path = tmp_path / "routing.json"
    save_routing_store(store, path)
    assert load_routing_store(path).meta["gate_function"] == "softmax"
    meta, tensors = load_tensors(sidecar_path(path), "routing side-car")
    meta["scoring_rule"] = meta.pop("gate_function")  # as written before the rename
    save_tensors(sidecar_path(path), tensors, meta)
    back = load_routing_store(path).meta
    assert back["gate_function"] == "softmax" and "scoring_rule" not in back
