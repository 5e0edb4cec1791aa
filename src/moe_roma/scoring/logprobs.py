"""The one computation of a continuation's log-likelihood from logits, shared by scoring and training.

>>> logits = torch.zeros(1, 3, 4)  # uniform over 4 tokens at 3 positions
>>> round(float(summed_logprobs(logits, torch.tensor([[0, 1, 2]]), torch.tensor([2]))), 4)  # 2 x log(1/4)
-2.7726
"""

from __future__ import annotations

import torch


def summed_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor, ends: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-row summed log-probability of each row's continuation tokens, shape (R,).

    ``logits`` (R, T, V): position ``t`` predicts ``targets[:, t]`` (R, T). Row ``r``'s continuation
    is the ``lengths[r]`` positions ending before ``ends[r]``; without ``ends`` it is the last
    ``lengths[r]`` positions (left-padded rows). The log-softmax is taken in float32 whatever the
    model's dtype; positions outside a row's continuation contribute nothing, to the value or the
    gradient. Differentiable: training uses it on live logits.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    token = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (R, T)
    t = torch.arange(logits.shape[1], device=logits.device).unsqueeze(0)
    end = logits.shape[1] if ends is None else ends.to(logits.device).unsqueeze(1)
    span = (t >= end - lengths.to(logits.device).unsqueeze(1)) & (t < end)
    return torch.where(span, token, torch.zeros((), dtype=token.dtype, device=token.device)).sum(-1)
