"""Router checkpoints, shaped like a PEFT adapter folder.

``router_config.json`` describes the run (format version, base model, family, tuned layers, experts,
gate function, hyper-parameters, seed, package version, data fingerprint) and
``router_weights.safetensors`` holds only the tuned router tensors, under the base model's own
parameter names. Loading never executes code: safetensors and JSON only.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma import __version__
from moe_roma.io.atomic import atomic_path, write_json
from moe_roma.io.errors import DataError, ModelError
from moe_roma.models.discovery import MoEInfo, discover_routers
from moe_roma.models.loading import model_identity

CHECKPOINT_FORMAT_VERSION = 1
CONFIG_NAME = "router_config.json"
WEIGHTS_NAME = "router_weights.safetensors"


def router_state(model: PreTrainedModel, info: MoEInfo, layers: list[int]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {name: params[name].detach().float().cpu().contiguous() for layer in layers for name in info.routers[layer].parameter_names}


def router_snapshot(model: PreTrainedModel, info: MoEInfo | None = None) -> dict[str, torch.Tensor]:
    """A copy of every router parameter of ``model`` (what training or a checkpoint may change)."""
    info = info or discover_routers(model)
    params = dict(model.named_parameters())
    return {n: params[n].detach().clone() for r in info.routers.values() for n in r.parameter_names}


def restore_routers(model: PreTrainedModel, snapshot: dict[str, torch.Tensor]) -> None:
    """Put a ``router_snapshot`` back: each router parameter gets its saved value, in the dtype and on the
    device the parameter has now, and stops requiring gradients."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in snapshot.items():
            param = params[name]
            param.data = value.to(device=param.device, dtype=param.dtype).clone()
            param.requires_grad_(False)


def save_router_checkpoint(
    model: PreTrainedModel, info: MoEInfo, layers: list[int], out_dir: str | Path, extra: dict | None = None
) -> Path:
    """Write the tuned routers of ``layers`` and their description into ``out_dir``."""
    out = Path(out_dir)
    tensors = router_state(model, info, layers)
    config = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "package_version": __version__,
        "base_model": model_identity(model),
        "base_model_revision": getattr(model.config, "_commit_hash", None),
        "family": info.family,
        "router_class": info.router_class,
        "tuned_layers": list(layers),
        "num_experts": info.num_experts,
        "gate_function": info.gate_function,
        "parameter_names": sorted(tensors),
        **(extra or {}),
    }
    with contextlib.ExitStack() as stack:  # both files or neither: a full disk leaves no half checkpoint
        tmp = stack.enter_context(atomic_path(out / WEIGHTS_NAME))
        save_file(tensors, str(tmp), metadata={"format": "pt", "moe_roma_version": __version__})
        write_json(stack.enter_context(atomic_path(out / CONFIG_NAME)), config)
    return out


def load_router_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a router checkpoint folder (config and tensors) without touching any model."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(folder, None, "router checkpoint folder does not exist")
    cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise DataError(folder, None, f"not a router checkpoint: {p.name} is missing")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(cfg_path, None, f"malformed JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise DataError(cfg_path, None, f"unsupported router checkpoint format (need format_version {CHECKPOINT_FORMAT_VERSION})")
    if "scoring_rule" in config:  # written before the gate function had its own name
        config.setdefault("gate_function", config.pop("scoring_rule"))
    try:
        tensors = load_file(str(w_path))
    except (SafetensorError, OSError) as exc:
        raise DataError(w_path, None, f"not a readable safetensors file ({str(exc).splitlines()[0]})") from None
    for name, t in tensors.items():
        if not torch.isfinite(t).all():
            raise DataError(w_path, f"tensor {name}", "contains NaN or infinite values")
    return config, tensors


def check_base_matches(model: PreTrainedModel, info: MoEInfo, config: dict, tensors: dict, where: str | Path) -> None:
    """Refuse a checkpoint made for another base model."""
    mine, theirs = model_identity(model), config.get("base_model", {})
    for key in ("model_type", "num_hidden_layers", "hidden_size"):
        if theirs.get(key) != mine[key]:
            raise ModelError(
                f"{where}: router checkpoint was made for another base model "
                f"({key} {theirs.get(key)!r}, this model has {mine[key]!r})"
            )
    params = dict(model.named_parameters())
    for name, t in tensors.items():
        if name not in params:
            raise ModelError(f"{where}: tensor {name} is not a parameter of {info.architecture}")
        if tuple(params[name].shape) != tuple(t.shape):
            raise ModelError(
                f"{where}: tensor {name} has shape {tuple(t.shape)}, the base model's is {tuple(params[name].shape)}"
            )
    router_names = {n for r in info.routers.values() for n in r.parameter_names}
    stray = sorted(set(tensors) - router_names)
    if stray:
        raise ModelError(f"{where}: tensor {stray[0]} is not a router parameter")


def apply_router_checkpoint(model: PreTrainedModel, path: str | Path) -> dict:
    """Load tuned routers into a base model in place; returns the checkpoint's config.

    >>> config = apply_router_checkpoint(model, "runs/demo/roma")  # doctest: +SKIP
    """
    config, tensors = load_router_checkpoint(path)
    info = discover_routers(model)
    check_base_matches(model, info, config, tensors, path)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, t in tensors.items():
            params[name].copy_(t.to(params[name].dtype))
    return config


def export_merged_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, routers: str | Path, out_dir: str | Path
) -> Path:
    """Write a full Hugging Face model folder with the tuned routers merged in.

    The result loads with ``AutoModelForCausalLM.from_pretrained(out_dir)`` and no project code.
    """
    import shutil

    apply_router_checkpoint(model, routers)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ModelError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        raise ModelError(f"{out}: output folder is not empty")
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk or a kill leaves no half-written model
        if isinstance(exc, OSError):
            raise ModelError(f"{out}: could not be written ({exc.strerror or exc})") from None
        if isinstance(exc, SafetensorError):
            raise ModelError(f"{out}: could not be written ({str(exc).splitlines()[0]})") from None
        raise
    return out
