"""Collection: the base model's answer, correctness and last-token routing for every sample."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma.data.example import MCExample
from moe_roma.data.prompts import continuation_context, letter_prompt
from moe_roma.io.errors import RomaError
from moe_roma.models.discovery import MoEInfo, discover_routers
from moe_roma.models.forward import last_token_forward
from moe_roma.models.hooks.capture import RoutingCapture
from moe_roma.models.inputs import encode_text, left_pad, pad_id
from moe_roma.models.loading import model_identity
from moe_roma.routing.store import RoutingStore
from moe_roma.scoring import SCORINGS, TRAINING_SCORING
from moe_roma.scoring.continuation import score_continuation
from moe_roma.scoring.letter import score_letter


@dataclass
class CollectSummary:
    n: int
    accuracy: float
    seconds: float
    truncated: int

    @property
    def examples_per_second(self) -> float:
        return self.n / max(self.seconds, 1e-9)

    def line(self) -> str:
        return (
            f"collected {self.n} examples: base accuracy {self.accuracy:.1%}, {self.seconds:.1f} s, "
            f"{self.examples_per_second:.1f} examples/s"
            + (f", {self.truncated} prompts truncated" if self.truncated else "")
        )


def prompt_text(example: MCExample, scoring: str, template: str | None = None) -> str:
    """The text whose last token's routing is recorded: the letter prompt or the continuation context."""
    if scoring == "letter":
        return letter_prompt(example, template)
    return continuation_context(example, template)


def collect_routing(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[MCExample],
    layers: str | list[int] = "last5",
    scoring: str = TRAINING_SCORING,
    batch_size: int = 16,
    max_length: int | None = 1024,
    template: str | None = None,
    progress: bool = True,
    info: MoEInfo | None = None,
    position: str = "last",
) -> tuple[RoutingStore, CollectSummary]:
    """Run the base model over ``examples`` in left-padded batches and record routing and answers.

    ``letter`` scoring answers with the argmax of the answer letters' next-token logits at the
    last prompt position; ``continuation`` answers with the choice of highest summed
    log-likelihood after the context (lm-evaluation-harness's ``acc``), and records the routing
    at the context's last token.

    >>> store, summary = collect_routing(model, tok, examples, layers="last2")  # doctest: +SKIP
    """
    if scoring not in SCORINGS:
        raise RomaError(f"scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")
    if max_length is not None and max_length < 1:
        raise RomaError(f"max_length must be at least 1, got {max_length}")  # e[-0:] would keep everything
    if batch_size < 1:
        raise RomaError(f"batch_size must be at least 1, got {batch_size}")
    info = info or discover_routers(model)
    chosen = info.select_layers(layers)
    start = time.perf_counter()
    texts = [prompt_text(ex, scoring, template) for ex in examples]
    full = [encode_text(tokenizer, t) for t in texts]
    encoded = [e[-max_length:] for e in full] if max_length is not None else full
    truncated = sum(len(f) > len(e) for f, e in zip(full, encoded))
    engine = {"template": template, "batch_size": batch_size, "max_length": max_length, "progress": progress}
    routing, predictions = _routing_and_answers(
        model, tokenizer, examples, encoded, RoutingCapture(info, chosen), scoring, position, engine
    )
    model_answer = [int(p) for p in predictions]
    seconds = time.perf_counter() - start
    meta = {
        "model": model_identity(model),
        "family": info.family,
        "num_experts": info.num_experts,
        "top_k": max(info.routers[layer].top_k for layer in chosen),  # experts per token, for diagnose
        "gate_function": info.gate_function,
        "answer_scoring": scoring,
        "template": template,
        "max_length": max_length,
        "position": position,
    }
    store = _store(tokenizer, examples, texts, [e[-1] for e in encoded], chosen, routing, model_answer, meta)
    summary = CollectSummary(len(examples), sum(store.is_correct) / max(len(store), 1), seconds, truncated)
    return store, summary


def _routing_and_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[MCExample],
    encoded: list[list[int]],
    capture: RoutingCapture,
    scoring: str,
    position: str,
    engine: dict,
) -> tuple[torch.Tensor, list[int]]:
    """Each example's routing at its prompt position (N, L, E) and the base model's answers, from the
    scoring engine (``engine``: its template, batch size, length limit and progress bar)."""
    with capture:
        if scoring == "letter":
            # The engine's letter scoring, reading the routing in the same forward pass as the answer.
            scores = score_letter(
                model, tokenizer, examples, capture=capture, position=position, desc="collect", **engine
            )
            return torch.stack([item.routing for item in scores.items]).float(), list(scores.predictions)
        routing = _context_routing(
            model, tokenizer, encoded, capture, engine["batch_size"], position, engine["progress"]
        )
    scores = score_continuation(model, tokenizer, examples, **engine)
    return routing, list(scores.predictions)


def _store(
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[MCExample],
    texts: list[str],
    token_ids: list[int],
    layers: list[int],
    routing: torch.Tensor,
    model_answer: list[int],
    meta: dict,
) -> RoutingStore:
    """The routing store of a collection: each example's prompt, last token, routing and answers."""
    return RoutingStore(
        ids=[ex.id for ex in examples],
        input_texts=texts,
        layers=layers,
        routing=routing,
        answer_index=[ex.answer for ex in examples],
        model_answer=model_answer,
        is_correct=[m == ex.answer for m, ex in zip(model_answer, examples)],
        token_ids=token_ids,
        token_texts=[tokenizer.decode([t]) for t in token_ids],
        questions=[ex.question for ex in examples],
        choices=[tuple(ex.choices) for ex in examples],
        tasks=[ex.task for ex in examples],
        continuations=[ex.continuation for ex in examples],
        meta=meta,
    )


def _context_routing(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    encoded: list[list[int]],
    capture: RoutingCapture,
    batch_size: int,
    position: str,
    progress: bool,
) -> torch.Tensor:
    """Routing at each continuation context's last token (or first, ``position="first"``): (N, L, E)."""
    # Longest first: similar lengths share a batch, so little padding is computed.
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    routing = torch.zeros(len(encoded), len(capture.layers), capture.info.num_experts)
    pad = pad_id(tokenizer)
    with tqdm(total=len(encoded), desc="collect", unit="ex", disable=not progress) as bar:
        for b in range(0, len(order), batch_size):
            rows = order[b : b + batch_size]
            out = last_token_forward(model, left_pad([encoded[i] for i in rows], pad), capture, position)
            routing[rows] = out.routing.float().cpu()
            bar.update(len(rows))
    return routing
