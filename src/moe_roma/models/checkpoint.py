"""Router checkpoints, shaped like a PEFT adapter folder.

``router_config.json`` describes the run (format version, base model, family, tuned layers, experts,
gate function, hyper-parameters, seed, package version, data fingerprint) and
``router_weights.safetensors`` holds only the tuned router tensors, under the base model's own
parameter names. Loading never executes code: safetensors and JSON only.

The folder checks itself: the config records the SHA-256 of the weight file (``weights_sha256``)
and the names of its tensors, and loading refuses a weight file that does not match it (edited,
torn, or from another run) and a config whose layers, expert count or parameter names disagree
with the tensors or with the base model. The weights are renamed into place before the config,
so a folder with a config is complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma import __version__
from moe_roma.io.atomic import atomic_path, current_umask, write_json
from moe_roma.io.errors import DataError, ModelError
from moe_roma.io.interrupts import critical
from moe_roma.io.outputs import Kind, Output, guard_output
from moe_roma.models.discovery import MoEInfo, discover_routers
from moe_roma.models.loading import model_identity

CHECKPOINT_FORMAT_VERSION = 2
# Format 1 (before the weights' SHA-256 was recorded) is still read; only its hash cannot be checked.
READABLE_FORMATS = (1, 2)
CONFIG_NAME = "router_config.json"
WEIGHTS_NAME = "router_weights.safetensors"
# What a router folder of `roma import-public` holds (a README.md only beside a checkpoint).
ROUTER_FOLDER = Kind(
    "router folder",
    members=(CONFIG_NAME, WEIGHTS_NAME, "README.md"),
    finished=(CONFIG_NAME,),
    guests=("README.md",),
)
# What `save_pretrained` writes for a causal LM and its tokenizer, and the model card.
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.*",
    "merges.txt",
    "chat_template.*",
    "README.md",
)
MERGED_MODEL = Kind("merged model", members=MODEL_FILES, finished=("config.json",))


def router_state(model: PreTrainedModel, info: MoEInfo, layers: list[int]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {
        name: params[name].detach().float().cpu().contiguous()
        for layer in layers
        for name in info.routers[layer].parameter_names
    }


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
    # Both files or neither: a full disk leaves no half checkpoint. The config's rename comes last (it
    # is entered first), so a folder with a config always has its weights; a stop waits for both renames.
    with critical(), contextlib.ExitStack() as stack:
        config_tmp = stack.enter_context(atomic_path(out / CONFIG_NAME))
        tmp = stack.enter_context(atomic_path(out / WEIGHTS_NAME))
        save_file(tensors, str(tmp), metadata={"format": "pt", "moe_roma_version": __version__})
        config["weights_sha256"] = file_sha256(tmp)
        try:
            write_json(config_tmp, config)
        except OSError as exc:  # blame the config, not the weights whose context is innermost
            raise ModelError(f"{out / CONFIG_NAME}: could not be written ({exc.strerror or exc})") from None
    return out


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def routers_fingerprint(path: str | Path, config: dict) -> str:
    """The SHA-256 of a router folder's weights: in its config (format 2, checked on load) or read."""
    recorded = config.get("weights_sha256")
    return recorded if isinstance(recorded, str) else file_sha256(Path(path) / WEIGHTS_NAME)


def load_router_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a router checkpoint folder (config and tensors) without touching any model.

    Refuses, in one sentence naming the file: a missing or malformed file, a weight file whose SHA-256
    is not the one recorded, a config whose ``tuned_layers``, ``num_experts`` or ``parameter_names``
    are malformed or disagree with the tensors, and NaN or infinite weights.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(folder, None, "router checkpoint folder does not exist")
    cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise DataError(folder, None, f"not a router checkpoint: {p.name} is missing")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(cfg_path, None, f"malformed JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict) or config.get("format_version") not in READABLE_FORMATS:
        raise DataError(
            cfg_path,
            None,
            f"unsupported router checkpoint format (need format_version {CHECKPOINT_FORMAT_VERSION})",
        )
    if "scoring_rule" in config:  # written before the gate function had its own name
        config.setdefault("gate_function", config.pop("scoring_rule"))
    recorded = config.get("weights_sha256")
    if config["format_version"] >= 2:
        if not isinstance(recorded, str):
            raise DataError(
                cfg_path, None, "lacks 'weights_sha256', the checksum of router_weights.safetensors"
            )
        if file_sha256(w_path) != recorded:
            raise DataError(
                w_path,
                None,
                f"does not match the SHA-256 recorded in {CONFIG_NAME}: the file was "
                "edited, damaged or copied from another run",
            )
    try:
        tensors = load_file(str(w_path))
    except (SafetensorError, OSError) as exc:
        raise DataError(
            w_path, None, f"not a readable safetensors file ({str(exc).splitlines()[0]})"
        ) from None
    for name, t in tensors.items():
        if not torch.isfinite(t).all():
            raise DataError(w_path, f"tensor {name}", "contains NaN or infinite values")
    _check_config_fields(cfg_path, config, tensors)
    return config, tensors


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _check_config_fields(cfg_path: Path, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    """The config's description of the tensors must be well formed and agree with them."""
    layers = config.get("tuned_layers")
    if (
        not isinstance(layers, list)
        or not layers
        or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in layers)
    ):
        raise DataError(
            cfg_path, None, f"'tuned_layers' must be a non-empty list of layer indices, got {layers!r}"
        )
    if len(set(layers)) != len(layers):
        raise DataError(cfg_path, None, f"'tuned_layers' lists a layer twice: {layers}")
    experts = config.get("num_experts")
    if not isinstance(experts, int) or isinstance(experts, bool) or experts < 1:
        raise DataError(cfg_path, None, f"'num_experts' must be a positive integer, got {experts!r}")
    names = config.get("parameter_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError(cfg_path, None, "'parameter_names' must be a list of tensor names")
    if sorted(names) != sorted(tensors):
        extra = sorted(set(names) - set(tensors)) or sorted(set(tensors) - set(names)) or names
        raise DataError(cfg_path, None, f"'parameter_names' disagree with {WEIGHTS_NAME} (e.g. {extra[0]!r})")


def check_base_matches(
    model: PreTrainedModel, info: MoEInfo, config: dict, tensors: dict, where: str | Path
) -> None:
    """Refuse a checkpoint made for another base model, or whose config disagrees with that model."""
    mine, theirs = model_identity(model), config.get("base_model", {})
    if not isinstance(theirs, dict):
        raise ModelError(f"{where}: router checkpoint's 'base_model' is not an object")
    for key in ("model_type", "num_hidden_layers", "hidden_size"):
        if theirs.get(key) != mine[key]:
            raise ModelError(
                f"{where}: router checkpoint was made for another base model "
                f"({key} {theirs.get(key)!r}, this model has {mine[key]!r})"
            )
    if config.get("num_experts") != info.num_experts:
        raise ModelError(
            f"{where}: router checkpoint says {config.get('num_experts')!r} experts, "
            f"{info.architecture} has {info.num_experts}"
        )
    layers = config.get("tuned_layers") or []
    bad = [x for x in layers if x not in info.routers]
    if bad:
        raise ModelError(
            f"{where}: tuned layers {bad} are not MoE layers of {info.architecture} "
            f"(its MoE layers: {info.moe_layers})"
        )
    params = dict(model.named_parameters())
    for name, t in tensors.items():
        if name not in params:
            raise ModelError(f"{where}: tensor {name} is not a parameter of {info.architecture}")
        if tuple(params[name].shape) != tuple(t.shape):
            raise ModelError(
                f"{where}: tensor {name} has shape {tuple(t.shape)}, the base model's is "
                f"{tuple(params[name].shape)}"
            )
    router_names = {n for r in info.routers.values() for n in r.parameter_names}
    stray = sorted(set(tensors) - router_names)
    if stray:
        raise ModelError(f"{where}: tensor {stray[0]} is not a router parameter")
    expected = {n for layer in layers for n in info.routers[layer].parameter_names}
    if set(tensors) != expected:
        odd = sorted(set(tensors) ^ expected)[0]
        side = "lacks" if odd in expected else "holds"
        raise ModelError(
            f"{where}: router checkpoint {side} tensor {odd}, but its 'tuned_layers' are {layers}"
        )


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


def _umask_modes(folder: Path) -> None:
    """Give every file the mode a plain ``open()`` gives under the user's umask (transformers writes 0600)."""
    mode = 0o666 & ~current_umask()
    for p in folder.rglob("*"):
        if p.is_file():
            p.chmod(mode)


def export_merged_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    routers: str | Path,
    out_dir: str | Path | Output,
    card: str | None = None,
) -> Path:
    """Write a full Hugging Face model folder with the tuned routers merged in (``card`` as its README.md).

    The result loads with ``AutoModelForCausalLM.from_pretrained(out_dir)`` and no project code. It is
    written into a staging folder and swapped in when complete: a full disk or a kill leaves no
    half-written model (and, with an ``Output`` that replaces one, the old model as it was).
    """
    apply_router_checkpoint(model, routers)
    output = out_dir if isinstance(out_dir, Output) else guard_output("out_dir", out_dir, MERGED_MODEL)
    out = output.path
    try:
        with output.staged() as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            if card is not None:
                (tmp / "README.md").write_text(card, encoding="utf-8")
            _umask_modes(tmp)
    except OSError as exc:
        raise ModelError(f"{out}: could not be written ({exc.strerror or exc})") from None
    except SafetensorError as exc:
        from moe_roma.io.atomic import _write_error

        reason = _write_error(exc) or str(exc).splitlines()[0]
        raise ModelError(f"{out}: could not be written ({reason})") from None
    return out
