"""``roma import-public``: the public code's ``router_ft.pt`` layout is imported, checked against the
base model, and a file that needs code unpickled is refused without running it."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import load_file

from helpers.tiny_models import save_tiny_model
from moe_roma.cli import main
from moe_roma.models.checkpoint import load_router_checkpoint
from moe_roma.models.loading import load_model


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("import") / "model", "olmoe", num_layers=4)


def public_layout(model_dir, layers=(2, 3), scale=2.0) -> dict:
    """The public code's torch.save: target_layers, a state_dict of layers.N.mlp.gate.weight, model_name."""
    model, _ = load_model(str(model_dir), dtype="float32", device="cpu")
    params = dict(model.named_parameters())
    state = {
        f"layers.{i}.mlp.gate.weight": params[f"model.layers.{i}.mlp.gate.weight"].detach() * scale
        for i in layers
    }
    return {"target_layers": list(layers), "state_dict": state, "model_name": str(model_dir)}


def test_public_checkpoint_becomes_a_router_folder(base, tmp_path, capsys):
    ckpt = tmp_path / "router_ft.pt"
    layout = public_layout(base)
    torch.save(layout, ckpt)
    out = tmp_path / "routers"
    assert main(["import-public", "--checkpoint", str(ckpt), "--model", str(base), "--out", str(out)]) == 0
    config, tensors = load_router_checkpoint(out)
    assert config["tuned_layers"] == [2, 3] and config["imported_from"]["model_name"] == str(base)
    for i in (2, 3):
        assert torch.equal(
            tensors[f"model.layers.{i}.mlp.gate.weight"], layout["state_dict"][f"layers.{i}.mlp.gate.weight"]
        )
    assert set(load_file(str(out / "router_weights.safetensors"))) == set(tensors)
    assert "imported from the public RoMA code's checkpoint" in (out / "README.md").read_text()
    # the folder is one that `roma apply` accepts for this base
    assert main(["apply", "--model", str(base), "--routers", str(out), "--json"]) == 0
    assert '"tuned_layers": [\n    2,\n    3\n  ]' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["state_dict"].update({"layers.2.mlp.gate.weight": torch.zeros(3, 5)}),
            "has shape (3, 5), but model.layers.2.mlp.gate.weight of the base model has",
        ),
        (
            lambda d: d["state_dict"].update({"layers.9.mlp.gate.weight": torch.zeros(4, 16)}),
            "is for layer 9, which is not an MoE layer",
        ),
        (
            lambda d: d.update({"target_layers": [1, 2, 3]}),
            "'target_layers': says [1, 2, 3] but the tensors are",
        ),
        # The same gate under two spellings: which copy is meant is unknown, so neither silently wins.
        (
            lambda d: d["state_dict"].update({"model.layers.2.mlp.gate.weight": torch.zeros(8, 16)}),
            "is the router parameter model.layers.2.mlp.gate.weight again (also 'layers.2.mlp.gate.weight')",
        ),
    ],
)
def test_mismatches_are_refused(base, tmp_path, capsys, edit, message):
    layout = public_layout(base)
    edit(layout)
    torch.save(layout, tmp_path / "router_ft.pt")
    out = tmp_path / "routers"
    assert (
        main(
            [
                "import-public",
                "--checkpoint",
                str(tmp_path / "router_ft.pt"),
                "--model",
                str(base),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (out / "router_config.json").exists()


class _Payload:
    """Unpickling this object would create the marker file: the side effect that must not happen."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_a_malicious_pickle_is_refused_without_running(base, tmp_path, capsys, writer):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "router_ft.pt"
    evil = {"target_layers": [3], "state_dict": {"layers.3.mlp.gate.weight": _Payload(marker)}}
    if writer == "torch":
        torch.save(evil, ckpt)
    else:
        ckpt.write_bytes(pickle.dumps(evil))
    with open(ckpt, "rb") as fh:  # the file really runs code when fully unpickled ...
        torch.load(fh, weights_only=False) if writer == "torch" else pickle.load(fh)
    assert marker.exists()
    marker.unlink()
    out = tmp_path / "routers"
    assert main(["import-public", "--checkpoint", str(ckpt), "--model", str(base), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "needs unpickling of code" in err and "refused without running it" in err and err.count("\n") == 1
    assert not marker.exists()  # ... and the import never did
    assert not out.exists()
