"""Turn texts into model inputs the same way everywhere (collection, training, evaluation).

Prompts are left-padded so that the last prompt token sits at position -1 in every row (only that
position's logits are computed); explicit position ids make a padded row compute exactly what the
unpadded prompt would. Context/continuation pairs are tokenised as lm-evaluation-harness does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from moe_roma.data.example import LETTERS
from moe_roma.io.errors import ModelError


@dataclass
class PromptBatch:
    input_ids: torch.Tensor  # (B, T), left-padded
    attention_mask: torch.Tensor  # (B, T)
    position_ids: torch.Tensor  # (B, T)
    truncated: int  # rows whose prompt was cut from the left to fit max_length

    def to(self, device: torch.device | str) -> PromptBatch:
        return PromptBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.position_ids.to(device),
            self.truncated,
        )

    def model_kwargs(self) -> dict:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
        }


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of a text with no special tokens added.

    lm-evaluation-harness adds a BOS token where the tokenizer adds one by default; for such models,
    run lm_eval with ``add_bos_token=False`` to compare like with like (docs/evaluation.md).
    """
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def left_pad(sequences: list[list[int]], pad_id: int, max_length: int | None = None) -> PromptBatch:
    """Left-pad token sequences, cutting over-long ones from the left (the end must survive)."""
    truncated = 0
    if max_length is not None:
        cut = [s[-max_length:] for s in sequences]
        truncated = sum(len(a) != len(b) for a, b in zip(cut, sequences))
        sequences = cut
    if any(len(s) == 0 for s in sequences):
        raise ModelError("a prompt encodes to zero tokens")
    t = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), t), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, t - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, t - len(s) :] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp_min(0)
    return PromptBatch(ids, mask, positions, truncated)


def letter_token_ids(tokenizer: PreTrainedTokenizerBase, n_choices: int) -> list[int]:
    """The token that starts `` A``, `` B``, ... after ``Answer:``; letters must map to distinct ids."""
    ids = []
    for letter in LETTERS[:n_choices]:
        enc = encode_text(tokenizer, f" {letter}")
        if not enc:
            raise ModelError(f"the tokenizer encodes ' {letter}' to nothing")
        # "▁A" in one token for most tokenizers; some split off the space: take the letter's token.
        ids.append(enc[-1] if len(enc) > 1 and tokenizer.decode(enc[:-1]).strip() == "" else enc[0])
    if len(set(ids)) != len(ids):
        raise ModelError(f"the tokenizer maps answer letters {LETTERS[:n_choices]} to the same token")
    return ids


def encode_pair(
    tokenizer: PreTrainedTokenizerBase, context: str, continuation: str
) -> tuple[list[int], list[int]]:
    """Context and continuation ids, split as lm-evaluation-harness does.

    Trailing spaces of the context move to the continuation; the whole string is encoded once and
    the continuation is what follows the context's own encoding, so merges across the boundary
    are tokenised exactly as in lm-evaluation-harness. An empty context becomes the EOS token.
    """
    return encode_pairs(tokenizer, [(context, continuation)])[0]


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase, pairs: list[tuple[str, str]]
) -> list[tuple[list[int], list[int]]]:
    """``encode_pair`` for many pairs: one tokenizer call for the whole strings, one for distinct contexts."""
    split = []
    for context, continuation in pairs:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        split.append((context, continuation))
    contexts = list(dict.fromkeys(c for c, _ in split if c))
    context_ids = dict(zip(contexts, _encode_many(tokenizer, contexts)))
    wholes = _encode_many(tokenizer, [c + x if c else x for c, x in split])
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else _pad_id(tokenizer)
    out = []
    for (context, _), whole in zip(split, wholes):
        if context == "":
            out.append(([eos], whole))
        else:
            ids = context_ids[context]
            out.append((ids, whole[len(ids) :]))
    return out


def _encode_many(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    return 0


pad_id = _pad_id


UNKNOWN_WARN_RATE = 0.05  # warn when at least this share of the tokens is the tokenizer's unknown token


def unknown_token_rate(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], limit: int = 2000
) -> float | None:
    """The share of tokens that are the tokenizer's unknown token (``<unk>``) over the first ``limit``
    texts, or None when the tokenizer has no unknown token (byte-level BPE never needs one)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return None
    total = hits = 0
    for text in texts[:limit]:
        ids = encode_text(tokenizer, text)
        total += len(ids)
        hits += sum(1 for i in ids if i == unk)
    return hits / total if total else None
