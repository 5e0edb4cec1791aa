"""Import a router checkpoint written by the method's public code (``router_ft.pt``).

That code saves, with ``torch.save``, a dict ``{"target_layers": [11, ..., 15], "state_dict":
{"layers.11.mlp.gate.weight": tensor, ...}, "model_name": "allenai/OLMoE-1B-7B-0125-Instruct"}``
(a ``.bias`` entry only where the gate has one). It is read here with
``torch.load(weights_only=True)`` only: torch's restricted unpickler builds tensors, dicts, lists,
numbers and strings and refuses anything else, so a file that would run code when unpickled is
refused before any of it runs. A bare state dict of the same keys (with or without a leading
``model.``) is read too. Each tensor is matched to the base model's own router parameter of that
layer, and its layer and shape are checked against the base model before our router folder
(``router_weights.safetensors`` + ``router_config.json``) is written.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from transformers import PreTrainedModel

from moe_roma.io.errors import DataError, ModelError
from moe_roma.models.checkpoint import file_sha256, save_router_checkpoint
from moe_roma.models.discovery import MoEInfo, discover_routers

_KEY = re.compile(r"^(?:model\.)*layers\.(\d+)\.(.+)$")


def read_public_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], list[int] | None, str | None]:
    """(state dict, target_layers, model_name) of a public-code checkpoint; never unpickles code."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message names the global it refused; keep one line of it.
        what = next(
            (line.strip() for line in str(exc).splitlines() if "GLOBAL" in line or "global" in line), ""
        )
        detail = f" ({what[:160]})" if what else ""
        raise DataError(
            path,
            None,
            "needs unpickling of code beyond tensors, dicts, lists, numbers and strings, so "
            f"it was refused without running it{detail}",
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(path, None, f"is not a readable torch checkpoint ({first[:160]})") from None
    if not isinstance(obj, dict):
        raise DataError(path, None, f"holds {type(obj).__name__}, not the dict the public code saves")
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict) or not state:
        raise DataError(path, None, "has no 'state_dict' of gate tensors")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    other = sorted(str(k) for k in state if k not in tensors and k not in ("target_layers", "model_name"))
    if other:
        raise DataError(path, f"entry {other[0]!r}", "is not a tensor")
    layers = obj.get("target_layers")
    if layers is not None and not (isinstance(layers, list) and all(isinstance(x, int) for x in layers)):
        raise DataError(path, "'target_layers'", f"must be a list of layer indices, got {layers!r}"[:200])
    name = obj.get("model_name")
    return tensors, layers, name if isinstance(name, str) else None


def map_public_tensors(
    model: PreTrainedModel, info: MoEInfo, tensors: dict[str, torch.Tensor], where: str | Path
) -> dict[str, torch.Tensor]:
    """The public code's ``layers.N.mlp.gate.weight`` names -> the base model's own router parameter
    names, each checked: an MoE layer of the model, a router parameter of that layer, the same shape."""
    params = dict(model.named_parameters())
    mapped: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}  # the checkpoint key each router parameter came from
    for key, tensor in tensors.items():
        m = _KEY.match(key)
        if m is None:
            raise DataError(
                where,
                f"tensor {key!r}",
                "is not named layers.N.<router parameter> as the public code names it",
            )
        layer, rest = int(m.group(1)), m.group(2)
        if layer not in info.routers:
            raise ModelError(
                f"{where}: tensor {key} is for layer {layer}, which is not an MoE layer of "
                f"{info.architecture} (its MoE layers: {info.moe_layers})"
            )
        names = [
            n
            for n in info.routers[layer].parameter_names
            if n == rest or n.endswith(f"layers.{layer}.{rest}")
        ]
        if len(names) != 1:
            raise ModelError(
                f"{where}: tensor {key} matches no router parameter of layer {layer} "
                f"(its router parameters: {info.routers[layer].parameter_names})"
            )
        target = names[0]
        if target in source:  # e.g. layers.3.mlp.gate.weight and model.layers.3.mlp.gate.weight
            raise DataError(
                where,
                f"tensor {key!r}",
                f"is the router parameter {target} again (also {source[target]!r}); "
                "the checkpoint holds it twice, so which copy is meant is unknown",
            )
        source[target] = key
        if tuple(tensor.shape) != tuple(params[target].shape):
            raise ModelError(
                f"{where}: tensor {key} has shape {tuple(tensor.shape)}, but {target} of the base model "
                f"has {tuple(params[target].shape)} (a checkpoint of another model?)"
            )
        if not torch.isfinite(tensor).all():
            raise DataError(where, f"tensor {key!r}", "contains NaN or infinite values")
        mapped[target] = tensor.detach().float()
    return mapped


def import_public_checkpoint(
    model: PreTrainedModel, checkpoint: str | Path, out_dir: str | Path
) -> tuple[Path, dict]:
    """Write our router folder for ``model`` from a public-code ``router_ft.pt``; returns (folder, summary).

    The model's routers are set to the imported tensors in place (it is the base model, loaded for
    this purpose); every router layer must be complete (a layer with a weight and no bias where the
    gate has a bias is refused), and ``target_layers``, when recorded, must be the layers found.
    """
    info = discover_routers(model)
    tensors, recorded_layers, model_name = read_public_checkpoint(checkpoint)
    mapped = map_public_tensors(model, info, tensors, checkpoint)
    layers = sorted(
        {layer for layer in info.routers for n in info.routers[layer].parameter_names if n in mapped}
    )
    if recorded_layers is not None and sorted(recorded_layers) != layers:
        raise DataError(
            checkpoint, "'target_layers'", f"says {recorded_layers} but the tensors are for layers {layers}"
        )
    for layer in layers:
        missing = [n for n in info.routers[layer].parameter_names if n not in mapped]
        if missing:
            raise ModelError(
                f"{checkpoint}: layer {layer} lacks {missing[0]}; a router is imported whole or not at all"
            )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in mapped.items():
            params[name].copy_(value.to(params[name].dtype))
    summary = {
        "source": "public RoMA code (router_ft.pt)",
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": file_sha256(checkpoint),
        "model_name": model_name,
    }
    out = save_router_checkpoint(model, info, layers, out_dir, {"method": "roma", "imported_from": summary})
    return out, {**summary, "tuned_layers": layers, "tensors": len(mapped)}
