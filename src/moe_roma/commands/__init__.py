"""Sub-commands of ``roma``: one module each, discovered by ``moe_roma.cli``."""

from __future__ import annotations

import argparse

DTYPES = ["auto", "float32", "bfloat16", "float16"]


def add_model_options(p: argparse.ArgumentParser, dtype_default: str | None = "auto") -> None:
    """``--dtype``, ``--device`` and ``--attn-implementation``: how every command loads a model."""
    p.add_argument("--dtype", default=dtype_default, choices=DTYPES)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument(
        "--attn-implementation", dest="attn_implementation", default=None,
        help="transformers attention kernel: sdpa, flash_attention_2, eager ... (default: transformers' choice)",
    )  # fmt: skip
