"""Resumable training state in one safetensors file, written atomically, checked when read.

Router weights, AdamW moments, RNG state and the position in the data order all live in a single
file (JSON metadata in its header), renamed into place only when complete: a process killed at
any moment leaves either the previous state or the new one, never a torn file.

The metadata records what the state belongs to, and ``--resume`` refuses a state that does not
fit the run it would continue, naming the field that differs:

* ``routing_sha256``: the routing the run trains on (its file's SHA-256, or of its content);
* ``base_model``: the base model's identity (type, architecture, sizes, expert count) and the
  SHA-256 of its untrained router weights, so another checkpoint of the same architecture differs;
* ``config``: every training setting (the run's placement, ``runtime.device``, and how often it
  saves, ``runtime.save_every``, may change);
* ``sha256``: the SHA-256 of the tensors and of the rest of this metadata, so an edited or
  bit-rotted file is refused; and the step, the tensor names and their shapes must fit the run.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch

from moe_roma.io.errors import DataError
from moe_roma.io.interrupts import critical
from moe_roma.io.tensorfile import load_tensors, save_tensors

STATE_NAME = "train_state.safetensors"
STATE_FORMAT_VERSION = 2
# Settings that may differ between a state and the run that resumes it: where it runs, how often it saves.
RESUMABLE_CHANGES = ("runtime.device", "runtime.device_map", "runtime.save_every")


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors``, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def state_sha256(meta: dict, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state: its tensors and its metadata (all but this field), canonical JSON."""
    rest = {k: v for k, v in meta.items() if k != "sha256"}
    text = json.dumps(rest, sort_keys=True, allow_nan=False, separators=(",", ":"))
    return hashlib.sha256((tensors_sha256(tensors) + text).encode()).hexdigest()


def save_train_state(
    out_dir: Path,
    step: int,
    params: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    info: dict,
) -> None:
    """Write the state after ``step`` optimiser steps; ``info`` carries the fingerprints and the config."""
    tensors: dict[str, torch.Tensor] = {}
    steps = {}
    for name, p in params.items():
        tensors[f"param/{name}"] = p.detach().cpu().contiguous()
        st = optimizer.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                tensors[f"adam/{key}/{name}"] = st[key].detach().cpu().contiguous()
        if "step" in st:
            steps[name] = float(st["step"])
    tensors["rng/torch"] = torch.get_rng_state()
    meta = {"format_version": STATE_FORMAT_VERSION, "step": step, "adam_steps": steps, **info}
    meta["sha256"] = state_sha256(meta, tensors)
    with critical():  # a SIGINT/SIGTERM waits for the rename: the state on disk is always whole
        save_tensors(Path(out_dir) / STATE_NAME, tensors, meta)


def load_train_state(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a state and check that it is whole: its format, step and tensor checksum."""
    meta, tensors = load_tensors(path, "training state")
    if meta.get("format_version") != STATE_FORMAT_VERSION:
        raise DataError(
            path,
            None,
            f"training state of another format (need format_version {STATE_FORMAT_VERSION}); "
            "start the run again with --overwrite",
        )
    step = meta.get("step")
    if not isinstance(step, int) or isinstance(step, bool):
        raise DataError(path, None, f"training state lacks its step (got {step!r})")
    try:
        whole = meta.get("sha256") == state_sha256(meta, tensors)
    except (TypeError, ValueError):  # metadata that is not plain JSON any more
        whole = False
    if not whole:
        raise DataError(
            path, None, "training state was edited or damaged: its content does not match its SHA-256"
        )
    return meta, tensors


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _first_difference(
    saved: dict, now: dict, ignore: tuple[str, ...] = ()
) -> tuple[str, object, object] | None:
    a, b = _flat(saved), _flat(now)
    for key in [*b, *(k for k in a if k not in b)]:
        if key in ignore:
            continue
        if a.get(key, "<missing>") != b.get(key, "<missing>"):
            return key, a.get(key, "<missing>"), b.get(key, "<missing>")
    return None


def check_state_fits(
    path: Path,
    meta: dict,
    tensors: dict[str, torch.Tensor],
    expected: dict,
    params: dict[str, torch.nn.Parameter],
    total_steps: int,
) -> None:
    """Refuse a state that does not belong to this run, naming the field; or one that is inconsistent.

    ``expected`` holds this run's ``routing_sha256``, ``base_model`` and ``config`` as ``save_train_state``
    records them.
    """
    if meta.get("routing_sha256") != expected["routing_sha256"]:
        raise DataError(
            path,
            None,
            "training state was made from another routing file (routing_sha256 "
            f"{str(meta.get('routing_sha256'))[:12]}..., this run's is "
            f"{expected['routing_sha256'][:12]}...); resume with the same --routing",
        )
    diff = _first_difference(meta.get("base_model") or {}, expected["base_model"])
    if diff is not None:
        key, theirs, mine = diff
        raise DataError(
            path,
            None,
            f"training state was made with another base model (base_model.{key} is "
            f"{_show(theirs)} in the state, {_show(mine)} now); resume with the same --model",
        )
    diff = _first_difference(meta.get("config") or {}, expected["config"], RESUMABLE_CHANGES)
    if diff is not None:
        key, theirs, mine = diff
        raise DataError(
            path,
            None,
            f"training state was saved with other training settings (setting {key} is "
            f"{_show(theirs)} in the state, {_show(mine)} now); resume with the same settings",
        )
    _check_position(path, meta, total_steps)
    _check_tensors(path, meta, tensors, params)


def _check_position(path: Path, meta: dict, total_steps: int) -> None:
    """The saved step lies inside this run, and so does its count of skipped steps."""
    step, skipped = meta["step"], meta.get("skipped", 0)
    if not 1 <= step < total_steps:
        raise DataError(
            path, None, f"training state is at step {step}, outside this run's steps 1 to {total_steps - 1}"
        )
    if not isinstance(skipped, int) or isinstance(skipped, bool) or not 0 <= skipped <= step:
        raise DataError(
            path, None, f"training state counts {skipped!r} skipped steps, not an integer in 0..{step}"
        )


def _check_tensors(
    path: Path, meta: dict, tensors: dict[str, torch.Tensor], params: dict[str, torch.nn.Parameter]
) -> None:
    """Exactly this run's tensors (weights, the optimiser's moments if any, the RNG state), each of the
    right shape and finite, and a valid optimiser step count for every weight with moments."""
    adam_steps = meta.get("adam_steps")
    if not isinstance(adam_steps, dict):
        raise DataError(path, None, "training state lacks its optimiser step counts ('adam_steps')")
    want = {"rng/torch"} | {f"param/{n}" for n in params}
    moments = {f"adam/{k}/{n}" for n in params for k in ("exp_avg", "exp_avg_sq")}
    if any(name in tensors for name in moments):
        want |= moments
    missing = sorted(want - set(tensors))
    if missing:
        raise DataError(path, None, f"training state lacks tensor {missing[0]}")
    stray = sorted(set(tensors) - want)
    if stray:
        raise DataError(path, None, f"training state holds tensor {stray[0]}, which this run does not train")
    for name, p in params.items():
        for key in (f"param/{name}", f"adam/exp_avg/{name}", f"adam/exp_avg_sq/{name}"):
            t = tensors.get(key)
            if t is None:
                continue
            if tuple(t.shape) != tuple(p.shape):
                raise DataError(
                    path, f"tensor {key}", f"has shape {tuple(t.shape)}, the model's is {tuple(p.shape)}"
                )
            if not t.is_floating_point() or not torch.isfinite(t).all():
                raise DataError(path, f"tensor {key}", "holds NaN, infinite or non-float values")
        if f"adam/exp_avg/{name}" in tensors:
            count = adam_steps.get(name)
            if (
                not isinstance(count, (int, float))
                or isinstance(count, bool)
                or not math.isfinite(count)
                or count < 0
            ):
                raise DataError(path, None, f"training state's optimiser step count for {name} is {count!r}")
    rng = tensors["rng/torch"]
    if rng.dtype != torch.uint8 or rng.shape != torch.get_rng_state().shape:
        raise DataError(
            path, "tensor rng/torch", f"is not a torch RNG state ({rng.dtype}, shape {tuple(rng.shape)})"
        )


def _show(value: object) -> str:
    return "missing" if value == "<missing>" else repr(value)


def restore_train_state(
    meta: dict,
    tensors: dict[str, torch.Tensor],
    params: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
) -> None:
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[f"param/{name}"].to(p.device, p.dtype))
            if f"adam/exp_avg/{name}" in tensors:
                optimizer.state[p] = {
                    "step": torch.tensor(meta["adam_steps"][name]),
                    "exp_avg": tensors[f"adam/exp_avg/{name}"].to(p.device),
                    "exp_avg_sq": tensors[f"adam/exp_avg_sq/{name}"].to(p.device),
                }
    torch.set_rng_state(tensors["rng/torch"])
