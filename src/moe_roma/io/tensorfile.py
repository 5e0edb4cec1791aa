"""Tensors plus JSON metadata in one safetensors file: written atomically, read without pickle."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from moe_roma.io.atomic import atomic_path
from moe_roma.io.errors import DataError
from moe_roma.io.paths import check_regular_file

META_KEY = "moe_roma"


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write ``tensors`` with ``meta`` (JSON in the safetensors header) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})


def load_tensor_meta(path: str | Path, what: str) -> dict:
    """The metadata of a file written by ``save_tensors``, without reading its tensors."""
    check_regular_file(path, what)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get(META_KEY, "{}"))
    except (SafetensorError, OSError, json.JSONDecodeError, ValueError) as exc:
        raise DataError(path, None, f"not a readable {what} ({str(exc).splitlines()[0]})") from None
    if not isinstance(meta, dict):
        raise DataError(path, None, f"not a readable {what} (its metadata is not a JSON object)")
    return meta


def load_tensors(path: str | Path, what: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata, tensors) of a file written by ``save_tensors``; ``what`` names it in errors."""
    meta = load_tensor_meta(path, what)
    try:
        # Copies: the tensors load_file returns can share the file's memory map, so a file overwritten in
        # place (cp) would change numbers already read.
        tensors = {k: v.clone() for k, v in load_file(str(path)).items()}
    except (SafetensorError, OSError) as exc:
        raise DataError(path, None, f"not a readable {what} ({str(exc).splitlines()[0]})") from None
    return meta, tensors
