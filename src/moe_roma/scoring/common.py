"""Helpers shared by letter and continuation scoring: the context length, batching checks, order, progress."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma.data.example import MCExample
from moe_roma.io.errors import RomaError
from moe_roma.scoring.results import Unusable

# lm-evaluation-harness's fallback when neither the config nor the tokenizer states a length.
DEFAULT_MAX_LENGTH = 2048
_TOKENIZER_INFINITY = 1_000_000_000_000  # tokenizers without a limit report a huge number


def context_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None) -> int:
    """The model's context length, found as lm-evaluation-harness finds it (so truncation agrees).

    The config's ``n_positions``, ``max_position_embeddings`` or ``n_ctx`` (a nested
    ``text_config`` first), else the tokenizer's ``model_max_length``, else 2048.
    """
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if value is not None:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit < _TOKENIZER_INFINITY:
        return int(limit)
    return DEFAULT_MAX_LENGTH


def model_device(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise RomaError(f"batch size must be at least 1, got {batch_size}")


def first_argmax(values: Sequence[float]) -> int:
    """Index of the first maximum, as numpy.argmax in lm-evaluation-harness (ties go to the earlier)."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def in_data_order(unusable: list[Unusable], examples: Sequence[MCExample]) -> list[Unusable]:
    """Batches run longest first; report in the data's order."""
    rank = {ex.id: i for i, ex in enumerate(examples)}
    return sorted(unusable, key=lambda u: rank.get(u.id, len(rank)))


def progress_bar(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr, leave=False, dynamic_ncols=True)
