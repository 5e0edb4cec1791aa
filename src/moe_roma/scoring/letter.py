"""Letter scoring: the prompt lists the lettered choices and ends with ``Answer:``; the prediction is
the letter whose next token (`` A``, `` B``, ...) is most likely at the last prompt position.

One forward pass per question, computing logits at that position only. Collection uses the same
function with a ``RoutingCapture``, so the answers it records are the ones evaluation gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma.data.example import MCExample
from moe_roma.data.prompts import DEFAULT_LETTER_TEMPLATE, letter_prompt
from moe_roma.models.forward import last_token_forward
from moe_roma.models.inputs import encode_text, left_pad, letter_token_ids, pad_id
from moe_roma.scoring.common import (
    check_batch_size,
    context_length,
    first_argmax,
    in_data_order,
    progress_bar,
)
from moe_roma.scoring.results import ItemResult, Scores, Unusable


def score_letter(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[MCExample],
    *,
    template: str | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
    capture: Any = None,
    position: str = "last",
    desc: str = "letter scoring",
) -> Scores:
    """Letter scoring: argmax over the answer letters' next-token log-probabilities.

    Prompts longer than ``max_length`` (default: the model's context length) lose tokens from the
    left. They are left-padded and run longest first (less padding); results come back in the
    order of ``examples``. With a ``RoutingCapture`` as ``capture``, each item also carries its
    routing weights at the last prompt token (``position="first"``: the first one), as
    ``ItemResult.routing`` of shape (layers, experts).
    """
    check_batch_size(batch_size)
    template = template or DEFAULT_LETTER_TEMPLATE
    limit = max_length or context_length(model, tokenizer)
    max_choices = max((len(ex.choices) for ex in examples), default=2)
    letter_ids = letter_token_ids(tokenizer, max_choices)  # refuses colliding letters up front
    encoded = [encode_text(tokenizer, letter_prompt(ex, template)) for ex in examples]
    # Longest first (after the cut): similar lengths share a batch, so little padding is computed.
    order = sorted(range(len(examples)), key=lambda i: -min(len(encoded[i]), limit))
    results: list[ItemResult | None] = [None] * len(examples)
    unusable: list[Unusable] = []
    pad = pad_id(tokenizer)
    with progress_bar(len(examples), desc, progress) as bar:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = left_pad([encoded[i] for i in rows], pad, limit)
            out = last_token_forward(model, batch, capture, position)
            log_probs = out.log_probs.cpu()
            for r, i in enumerate(rows):
                ex = examples[i]
                ids = letter_ids[: len(ex.choices)]
                scores = tuple(float(x) for x in log_probs[r, ids])
                truncated = len(encoded[i]) > limit
                if truncated:
                    reason = f"prompt of {len(encoded[i])} tokens cut to the last {limit}"
                    unusable.append(Unusable(ex.id, ex.task, reason, True))
                routing = None if out.routing is None else out.routing[r].detach().cpu()
                results[i] = ItemResult(
                    ex.id, ex.task, ex.answer, scores, first_argmax(scores), None, truncated, True, routing
                )
            bar.update(len(rows))
    return Scores([r for r in results if r is not None], in_data_order(unusable, examples))
