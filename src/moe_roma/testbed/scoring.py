"""Continuation log-likelihood scoring, the testbed's own small evaluation helper.

Each choice is scored as the sum of the log-probabilities of ``" " + choice`` after the
continuation context (``moe_roma.data.prompts.DEFAULT_CONTINUATION_TEMPLATE``); the
prediction is the argmax. This is how the tiny model is pre-trained to answer, so it is the
scoring under which its accuracy means something.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch

from moe_roma.data.example import MCExample
from moe_roma.data.prompts import continuation_context


def _encode_pairs(tokenizer, examples: Sequence[MCExample]) -> list[tuple[list[int], int]]:
    """(token ids of context + continuation, number of continuation tokens) per choice."""
    out: list[tuple[list[int], int]] = []
    for ex in examples:
        # No special tokens, as the project's evaluator and lm-evaluation-harness encode.
        ctx = tokenizer(continuation_context(ex), add_special_tokens=False)["input_ids"]
        for choice in ex.choices:
            cont = tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
            out.append((list(ctx) + list(cont), len(cont)))
    return out


@torch.no_grad()
def choice_logprobs(model, tokenizer, examples: Sequence[MCExample], batch_size: int = 64) -> list[list[float]]:
    """Summed continuation log-probability of every choice of every example."""
    pairs = _encode_pairs(tokenizer, examples)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores: list[float] = [0.0] * len(pairs)
    # Sort by length so batches carry little padding; right padding keeps positions exact.
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(pairs[i][0]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            seq = pairs[i][0]
            ids[r, : len(seq)] = torch.tensor(seq)
            mask[r, : len(seq)] = 1
        dev = next(model.parameters()).device
        logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()
        for r, i in enumerate(idx):
            seq, n_cont = pairs[i]
            pos = torch.arange(len(seq) - n_cont, len(seq))
            # The token at position p is predicted by the logits at position p - 1.
            scores[i] = float(logp[r, pos - 1, torch.tensor(seq)[pos]].sum())
    n = [len(ex.choices) for ex in examples]
    out, k = [], 0
    for m in n:
        out.append(scores[k : k + m])
        k += m
    return out


def accuracy(model, tokenizer, examples: Sequence[MCExample], batch_size: int = 64) -> dict[str, float]:
    """Overall and per-family accuracy (keys ``"all"`` and each task name)."""
    preds = choice_logprobs(model, tokenizer, examples, batch_size)
    hits: dict[str, list[int]] = defaultdict(list)
    for ex, s in zip(examples, preds):
        ok = int(max(range(len(s)), key=s.__getitem__) == ex.answer)
        hits["all"].append(ok)
        hits[ex.task].append(ok)
    return {k: sum(v) / len(v) for k, v in sorted(hits.items())}
