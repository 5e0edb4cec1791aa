"""Forward passes shared by collection, evaluation and the baselines."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from moe_roma.models.hooks.capture import RoutingCapture
from moe_roma.models.inputs import PromptBatch


@dataclass
class LastTokenOutput:
    log_probs: torch.Tensor  # (B, V) next-token log-probabilities after the last prompt token
    routing: torch.Tensor | None  # (B, L, E) routing weights at the last prompt token, if captured


@torch.no_grad()
def last_token_forward(
    model: PreTrainedModel, batch: PromptBatch, capture: RoutingCapture | None = None, position: str = "last"
) -> LastTokenOutput:
    """One forward pass over a left-padded batch, computing logits at the last position only.

    ``logits_to_keep=1`` skips the full-vocabulary projection at every other position. Routing is
    read at the last prompt token, or at the first real one with ``position="first"`` (ablation).
    """
    device = next(model.parameters()).device
    batch = batch.to(device)
    if capture is not None:
        capture.clear()
    out = model(**batch.model_kwargs(), logits_to_keep=1, use_cache=False)
    log_probs = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
    routing = None
    if capture is not None:
        t = batch.input_ids.shape[1]
        if position == "first":
            where = t - batch.attention_mask.sum(dim=1)  # left padding: first real token
        else:
            where = torch.full((batch.input_ids.shape[0],), t - 1, device=device)
        routing = capture.weights_at(batch.input_ids.shape, where)
    return LastTokenOutput(log_probs, routing)
