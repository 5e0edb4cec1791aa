"""One forward pass over training items: per-sample task loss and last-prompt-token routing.

Shared by router training, oracle routing and C3PO, so that all three read answers and routing
in exactly the same way.
"""

from __future__ import annotations

import contextlib

import torch
from transformers import PreTrainedModel

from moe_roma.methods.common import losses
from moe_roma.methods.common.batches import TrainItem, make_batch
from moe_roma.methods.common.prefix import PrefixCache, replay_prefix
from moe_roma.models.discovery import MoEInfo
from moe_roma.models.hooks.capture import RoutingCapture
from moe_roma.models.hooks.override import RoutingOverride, RoutingTargets
from moe_roma.scoring.logprobs import summed_logprobs


def autocast_for(model: PreTrainedModel) -> contextlib.AbstractContextManager:
    """Half-precision models run under autocast, so fp32 router weights (the trained copies, kept in
    fp32 with their optimiser state) meet half-precision activations without dtype errors."""
    dtype = next(model.parameters()).dtype
    half = {p.dtype for p in model.parameters()} & {torch.bfloat16, torch.float16}
    if not half:
        return contextlib.nullcontext()
    device_type = next(model.parameters()).device.type
    return torch.autocast(device_type=device_type, dtype=half.pop() if dtype == torch.float32 else dtype)


def items_forward(
    model: PreTrainedModel,
    info: MoEInfo,
    layers: list[int],
    items: list[TrainItem],
    pad_id: int,
    task_loss: str,
    letter_ids: torch.Tensor | None = None,
    cache: PrefixCache | None = None,
    offsets: dict[int, torch.Tensor] | None = None,
    router_hooks: contextlib.AbstractContextManager | None = None,
    position: str = "last",
    targets: dict[int, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Returns ``task`` (B,) losses, ``scores`` (B, C) answer scores (-inf past a sample's choices)
    and ``routing`` (B, L, E): the routing weights at each sample's last prompt token.

    ``offsets[layer]`` (B, E) shifts that layer's router logits at the last prompt token
    (oracle / C3PO); ``targets[layer]`` (B, E) *sets* that layer's routing weights there (C3PO, the
    target test); ``cache`` replays the frozen prefix instead of recomputing it.
    """
    device = next(model.parameters()).device
    batch = make_batch(items, pad_id, position)
    ids = batch.input_ids.to(device)
    kwargs = {
        "input_ids": ids,
        "attention_mask": batch.attention_mask.to(device),
        "position_ids": batch.position_ids.to(device),
        "logits_to_keep": batch.logits_to_keep,
        "use_cache": False,
    }
    item_of_row = torch.tensor([b for b, _ in batch.seq_keys], device=device)
    choice_of_row = torch.tensor([c for _, c in batch.seq_keys], device=device)
    # Every row of an item shares its context, so the prompt token sits at the same place in each.
    row_pos = batch.routing_pos.to(device)[item_of_row]
    stack = contextlib.ExitStack()
    with stack:
        first = min(layers)
        if cache is not None and first > 0:
            keys = [(items[b].index, c) for b, c in batch.seq_keys]
            stack.enter_context(
                replay_prefix(model, info, first, cache.batch_states(keys, ids.shape[1], device))
            )
        if offsets:
            per_row = {layer: off[item_of_row] for layer, off in offsets.items()}
            stack.enter_context(RoutingOverride(info, per_row, row_pos, ids.shape))
        cap = stack.enter_context(RoutingCapture(info, layers))
        if targets is not None:
            per_row = {layer: t.to(device)[item_of_row] for layer, t in targets.items()}
            stack.enter_context(RoutingTargets(info, per_row, row_pos, ids.shape))
        if router_hooks is not None:
            stack.enter_context(router_hooks)
        stack.enter_context(autocast_for(model))
        out = model(**kwargs)
        routing = cap.weights_at_rows(ids.shape, batch.routing_rows.to(device), batch.routing_pos.to(device))
    logits = out.logits.float()
    task, scores = _task_loss(
        items, batch, logits, ids, task_loss, letter_ids, item_of_row, choice_of_row, device
    )
    return {"task": task, "scores": scores, "routing": routing}


def _task_loss(
    items: list[TrainItem],
    batch,
    logits: torch.Tensor,
    ids: torch.Tensor,
    task_loss: str,
    letter_ids: torch.Tensor | None,
    item_of_row: torch.Tensor,
    choice_of_row: torch.Tensor,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample cross-entropy over the choices and the (B, C) scores it is taken over: the letter
    logits at the last token, or each choice row's summed continuation log-probability."""
    answers = torch.tensor([it.answer for it in items], device=device)
    n_max = max(it.n_choices for it in items)
    valid = torch.tensor([[c < it.n_choices for c in range(n_max)] for it in items], device=device)
    if task_loss == "letter":
        scores = (
            logits[:, -1, :].index_select(1, letter_ids[:n_max].to(device)).masked_fill(~valid, float("-inf"))
        )
    else:
        k = logits.shape[1]
        cont = torch.tensor([items[b].cont_lens[c] for b, c in batch.seq_keys], device=device)
        seq_ll = summed_logprobs(logits[:, :-1], ids[:, -(k - 1) :], cont)  # the last cont tokens of each row
        scores = torch.full((len(items), n_max), float("-inf"), device=device)
        scores = scores.index_put((item_of_row, choice_of_row), seq_ll)
    task = losses.choice_cross_entropy(scores, answers, valid)
    return task, scores
