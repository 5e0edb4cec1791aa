"""Resumable training state in one safetensors file, written atomically.

Router weights, AdamW moments, RNG state and the position in the data order all live in a single
file (JSON metadata in its header), renamed into place only when complete: a process killed at
any moment leaves either the previous state or the new one, never a torn file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from moe_roma.io.errors import DataError
from moe_roma.io.tensorfile import load_tensors, save_tensors

STATE_NAME = "train_state.safetensors"


def save_train_state(
    out_dir: Path, step: int, params: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer, info: dict
) -> None:
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
    save_tensors(out_dir / STATE_NAME, tensors, {"step": step, "adam_steps": steps, **info})


def load_train_state(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    meta, tensors = load_tensors(path, "training state")
    if not isinstance(meta.get("step"), int):
        raise DataError(path, None, "training state lacks its step")
    return meta, tensors


def restore_train_state(
    meta: dict, tensors: dict[str, torch.Tensor], params: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer
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
