"""Training items: the token sequences of each sample and where its answer and routing are read."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from moe_roma.io.errors import DataError
from moe_roma.models.inputs import encode_pair, encode_text, left_pad, letter_token_ids
from moe_roma.routing.store import RoutingStore


@dataclass
class TrainItem:
    """One sample. ``letter``: one sequence, the prompt. ``continuation``: one sequence per choice,
    context + choice, whose last ``cont_lens[c]`` tokens are the choice's continuation."""

    index: int  # row in the routing store
    seqs: list[list[int]]
    cont_lens: list[int]
    answer: int
    n_choices: int


def build_items(
    store: RoutingStore, tokenizer: PreTrainedTokenizerBase, task_loss: str, max_length: int, path=None
) -> list[TrainItem]:
    items = []
    for i in range(len(store)):
        text = store.input_texts[i]
        if task_loss == "letter":
            n = len(store.choices[i]) if store.choices[i] else max(store.answer_index[i] + 1, 2)
            items.append(
                TrainItem(i, [encode_text(tokenizer, text)[-max_length:]], [0], store.answer_index[i], n)
            )
            continue
        choices = store.choices[i]
        if not choices:
            raise DataError(
                path, f"id {store.ids[i]}", "continuation loss needs the choices' texts ('choices')"
            )
        seqs, lens = [], []
        partial = store.continuations[i]
        for choice in choices:
            # Partial scoring (WinoGrande): each choice is a context and the fixed continuation is
            # scored after it; r_i is then read at the end of the first choice's context.
            ctx, cont = (
                encode_pair(tokenizer, choice, " " + partial)
                if partial
                else encode_pair(tokenizer, text, " " + choice)
            )
            if not cont:
                raise DataError(path, f"id {store.ids[i]}", f"choice {choice!r} encodes to no tokens")
            seq = (ctx + cont)[-max_length:]
            seqs.append(seq)
            lens.append(min(len(cont), len(seq) - 1))
        items.append(TrainItem(i, seqs, lens, store.answer_index[i], len(choices)))
    return items


@dataclass
class StepBatch:
    """A left-padded batch of all sequences of some items, with the bookkeeping to read them."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    seq_keys: list[tuple[int, int]]  # (item position in batch, choice) per row
    items: list[TrainItem]
    routing_rows: torch.Tensor  # (B,) the row whose context-end routing is r_i
    routing_pos: torch.Tensor  # (B,) position of the prompt token whose routing is r_i, in that row
    logits_to_keep: int


def make_batch(items: list[TrainItem], pad_id: int, position: str = "last") -> StepBatch:
    """``position``: read routing at the prompt's ``last`` token (RoMA) or its ``first`` (ablation)."""
    seqs, keys = [], []
    for b, item in enumerate(items):
        for c, s in enumerate(item.seqs):
            seqs.append(s)
            keys.append((b, c))
    padded = left_pad(seqs, pad_id)
    t = padded.input_ids.shape[1]
    rows, pos = [], []
    for b, item in enumerate(items):
        row = keys.index((b, 0))
        rows.append(row)
        if position == "first":
            pos.append(t - len(item.seqs[0]))  # left padding: the first real token
        else:
            pos.append(t - 1 - item.cont_lens[0])  # the prompt's last token, before any continuation
    keep = 1 + max(max(item.cont_lens) for item in items)
    return StepBatch(
        padded.input_ids,
        padded.attention_mask,
        padded.position_ids,
        keys,
        items,
        torch.tensor(rows),
        torch.tensor(pos),
        keep,
    )


def letter_ids_tensor(tokenizer: PreTrainedTokenizerBase, max_choices: int) -> torch.Tensor:
    return torch.tensor(letter_token_ids(tokenizer, max_choices))
