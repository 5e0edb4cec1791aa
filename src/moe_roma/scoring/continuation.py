"""Continuation scoring: lm-evaluation-harness's ``multiple_choice``, with each shared context run once.

Each choice is scored as the summed log-likelihood of ``" " + choice`` after the context; ``acc``
takes the argmax of that sum and ``acc_norm`` the argmax of the sum divided by the choice's
length in characters. Partial scoring (WinoGrande, ``example.continuation`` set) scores the fixed
continuation after each context option instead.

The requests are lm-evaluation-harness's, token for token: the same context/continuation split
(``encode_pair``), the same left truncation to ``max_length + 1`` tokens, the same context
length. Two paths compute their log-likelihoods, and give the same numbers up to float noise:

* **shared context** (``Loglikelihood.shared``): the requests that share a context (the choices
  of one question) run it once. The contexts of several questions are left-padded into one
  batch and run with ``use_cache=True``; the logits at each context's last token predict every
  choice's first token. The key/value cache is then expanded over the choices (each choice gets
  its question's rows, however many choices each question has) and only the continuations'
  remaining tokens run after it, right-padded, with the contexts' attention mask and position
  ids carried on.
* **per request**: lm-evaluation-harness's own computation, one row per request: right
  padding, no attention mask, longest first. It serves every request the first path cannot:
  a context no other request shares (partial scoring, where each option is a context), an input
  cut from the left, and models whose cache cannot be expanded over choices (linear-attention
  and state-space hybrids, sparse-attention indexers: any cache that is not exactly a
  ``DynamicCache`` of full or sliding-window attention layers). ``shares_context(model)`` tells
  which models take the first path; it reads the cache a one-token forward returns rather than
  guessing from the family.

>>> from moe_roma.data.example import MCExample
>>> continuation_requests(MCExample("1", "2 + 2 = ?", ("3", "4"), 1))
[('Question: 2 + 2 = ?\\nAnswer:', ' 3'), ('Question: 2 + 2 = ?\\nAnswer:', ' 4')]
"""

from __future__ import annotations

import copy
import inspect
import weakref
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, cache_utils

from moe_roma.data.example import MCExample
from moe_roma.data.prompts import continuation_context
from moe_roma.io.errors import RomaError
from moe_roma.models.inputs import encode_pairs, left_pad, pad_id
from moe_roma.scoring.common import check_batch_size, context_length, first_argmax, model_device, progress_bar
from moe_roma.scoring.logprobs import summed_logprobs
from moe_roma.scoring.results import ItemResult, Scores, Unusable

# lm-evaluation-harness puts this between the context and each choice.
TARGET_DELIMITER = " "


def continuation_requests(example: MCExample, template: str | None = None) -> list[tuple[str, str]]:
    """The (context, continuation) pairs lm-evaluation-harness would score for ``example``.

    Partial scoring (``example.continuation`` set): each choice is a context and the fixed
    continuation follows it; otherwise the templated question is the context and each choice
    follows as ``" " + choice``.
    """
    if example.continuation is not None:
        return [(choice, TARGET_DELIMITER + example.continuation) for choice in example.choices]
    context = continuation_context(example, template)
    return [(context, TARGET_DELIMITER + choice) for choice in example.choices]


def choice_lengths(example: MCExample) -> list[int]:
    """What ``acc_norm`` divides by: the length in characters of each item of the choice list.

    lm-evaluation-harness divides by ``len(choice)`` for every entry of ``doc_to_choice`` -- the
    choice text without the leading space, and for partial scoring the context option.
    """
    return [len(choice) for choice in example.choices]


@dataclass(frozen=True)
class Loglikelihood:
    """The log-likelihood of one continuation, and how its input had to be treated."""

    value: float | None  # None: could not be scored (continuation longer than the context)
    truncated: bool
    context_tokens: int
    continuation_tokens: int
    shared: bool = False  # computed on the shared-context path (its context run once for its group)


# --- which models can share a context -------------------------------------------------------

# Cache layers holding plain per-token keys and values: selecting batch rows of them is all it takes to
# give each choice its context. Not ``DynamicIndexedLayer``: a sparse-attention indexer (DeepSeek-V3.2,
# GLM-DSA) picks its top-k keys differently when a token is run after a cache than in one full pass, so
# its scores would drift from lm-evaluation-harness's (by up to 0.06 nats on the tiny test models).
_EXPANDABLE_LAYERS = tuple(
    layer
    for layer in (getattr(cache_utils, name, None) for name in ("DynamicLayer", "DynamicSlidingWindowLayer"))
    if layer is not None
)
_SHARES_CONTEXT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cache_argument(model: PreTrainedModel) -> str:
    """transformers 5.24 renamed ``past_key_values`` to ``cache``; older 5.x releases take the old name."""
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


def _returned_cache(out) -> object | None:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _expandable(cache: object | None) -> bool:
    # Exactly a DynamicCache (subclasses such as MiniMax's keep extra state the layers do not hold) whose
    # every layer is a plain attention layer. Linear-attention and state-space layers carry a recurrent
    # state that batch selection alone does not make right for a model that runs on past the context.
    if type(cache) is not getattr(cache_utils, "DynamicCache", None):
        return False
    layers = getattr(cache, "layers", None) or []
    return bool(layers) and all(type(layer) in _EXPANDABLE_LAYERS for layer in layers)


@torch.no_grad()
def shares_context(model: PreTrainedModel) -> bool:
    """Whether the model's key/value cache can be expanded over choices (the shared-context path).

    Read from the cache a one-token forward with ``use_cache=True`` returns, once per model object.
    """
    known = _SHARES_CONTEXT.get(model)
    if known is None:
        ids = torch.zeros((1, 1), dtype=torch.long, device=model_device(model))
        try:
            out = model(input_ids=ids, use_cache=True)
        except (TypeError, ValueError):  # a forward that takes no cache
            known = False
        else:
            known = _expandable(_returned_cache(out))
        _SHARES_CONTEXT[model] = known
    return known


def _rows_of(cache: object, index: torch.Tensor) -> object:
    """A cache holding rows ``index`` of ``cache`` (repeats allowed); ``cache`` itself is left as it was.

    Only plain attention layers get here (``_expandable``): their keys and values are all they hold per
    row. The copies are shallow, and the layers' updates assign new tensors, never write into old ones.
    """
    rows = copy.copy(cache)
    rows.layers = []
    for layer in cache.layers:
        layer = copy.copy(layer)
        if layer.is_initialized and layer.keys.numel() > 0:
            layer.keys, layer.values = layer.keys.index_select(0, index), layer.values.index_select(0, index)
        rows.layers.append(layer)
    return rows


# --- the two paths --------------------------------------------------------------------------


def _per_request(model, pairs, todo, limit, batch_size, pad, results, bar) -> None:
    """lm-evaluation-harness's computation: one right-padded row per request, longest first."""
    # lm-evaluation-harness's order: longest first, ties by the tokens themselves.
    todo = sorted(
        todo, key=lambda i: (-(len(pairs[i][0]) + len(pairs[i][1])), tuple(pairs[i][0] + pairs[i][1]))
    )
    device = model_device(model)
    for start in range(0, len(todo), batch_size):
        rows = todo[start : start + batch_size]
        inputs = [(pairs[i][0] + pairs[i][1])[-(limit + 1) :][:-1] for i in rows]
        width = max(len(x) for x in inputs)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        for r, x in enumerate(inputs):
            ids[r, : len(x)] = torch.tensor(x, dtype=torch.long)
        # Positions that predict a continuation token lie in [len(x) - n_cont, len(x)); keep the
        # logits from the earliest such position of the batch to the end, nothing before.
        first = min(len(x) - len(pairs[i][1]) for x, i in zip(inputs, rows))
        keep = width - first
        logits = model(input_ids=ids.to(device), logits_to_keep=keep, use_cache=False).logits
        conts = [pairs[i][1] for i in rows]
        ends = torch.tensor([len(x) - first for x in inputs])
        targets = torch.zeros((len(rows), keep), dtype=torch.long)
        for r, (cont, end) in enumerate(zip(conts, ends.tolist())):
            targets[r, end - len(cont) : end] = torch.tensor(cont, dtype=torch.long)
        lengths = torch.tensor([len(c) for c in conts])
        values = summed_logprobs(logits, targets.to(logits.device), lengths, ends).tolist()
        for i, value in zip(rows, values):
            ctx, cont = pairs[i]
            results[i] = Loglikelihood(value, len(ctx) + len(cont) > limit + 1, len(ctx), len(cont))
        bar.update(len(rows))


def _shared_context(model, pairs, groups, batch_size, pad, results, bar) -> None:
    """Each group's context run once, its cache expanded over the group's continuations.

    ``groups``: lists of request indices with the same context tokens. Up to ``batch_size`` contexts
    run together, longest first. The logits at each context's last token give every continuation's
    first token, so one-token continuations need nothing more; the others run after their rows of
    the cache (``_passes``).
    """
    device = model_device(model)
    groups = sorted(groups, key=lambda g: (-len(pairs[g[0]][0]), tuple(pairs[g[0]][0])))
    for start in range(0, len(groups), batch_size):
        batch = groups[start : start + batch_size]
        contexts = left_pad([pairs[g[0]][0] for g in batch], pad).to(device)
        out = model(**contexts.model_kwargs(), logits_to_keep=1, use_cache=True)
        cache, last = _returned_cache(out), out.logits[:, -1]  # (G, V)
        rows = [(g, i) for g, group in enumerate(batch) for i in group]
        for chunk in _passes(rows, pairs, budget=batch_size * contexts.input_ids.shape[1]):
            of_group = torch.tensor([g for g, _ in chunk], device=device)
            conts = [pairs[i][1] for _, i in chunk]
            width = max(len(c) for c in conts)
            logits = last[of_group].unsqueeze(1)
            if width > 1:
                logits = torch.cat([logits, _continue(model, cache, contexts, of_group, conts, pad)], dim=1)
            targets = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, cont in enumerate(conts):
                targets[r, : len(cont)] = torch.tensor(cont, dtype=torch.long)
            lengths = torch.tensor([len(c) for c in conts])
            values = summed_logprobs(logits, targets.to(logits.device), lengths, lengths).tolist()
            for (_, i), value in zip(chunk, values):
                results[i] = Loglikelihood(value, False, len(pairs[i][0]), len(pairs[i][1]), shared=True)
            bar.update(len(chunk))


def _passes(rows: list[tuple[int, int]], pairs, budget: int) -> list[list[tuple[int, int]]]:
    """Split (group, request) rows into the passes run after the context pass.

    One-token continuations form a pass of their own that runs nothing. The others go longest first,
    each pass holding at most ``budget`` fed tokens (padding included): no more than the context pass
    held, so no pass needs more memory for its activations. With contexts at least as long as the
    continuations, all of a batch's choices run in one pass.
    """
    n_fed = {i: len(pairs[i][1]) - 1 for _, i in rows}  # every continuation token but the first is fed
    longer = sorted((r for r in rows if n_fed[r[1]] > 0), key=lambda r: -n_fed[r[1]])
    passes = [[r for r in rows if n_fed[r[1]] == 0]]
    while longer:
        take = max(budget // n_fed[longer[0][1]], 1)
        passes.append(longer[:take])
        longer = longer[take:]
    return [p for p in passes if p]


def _continue(
    model, cache, contexts, of_group: torch.Tensor, conts: list[list[int]], pad: int
) -> torch.Tensor:
    """Logits (R, width - 1, V) at each continuation's tokens but its last, run after its context's cache
    rows.

    Rows are right-padded; the attention mask carries each context's left padding on, and position
    ids go on from each context's own length.
    """
    device = of_group.device
    width = max(len(c) for c in conts) - 1
    fed = torch.full((len(conts), width), pad, dtype=torch.long)
    for r, cont in enumerate(conts):
        fed[r, : len(cont) - 1] = torch.tensor(cont[:-1], dtype=torch.long)
    steps = torch.arange(width, device=device)
    real = (steps < torch.tensor([len(c) - 1 for c in conts], device=device).unsqueeze(1)).long()
    return model(
        input_ids=fed.to(device),
        attention_mask=torch.cat([contexts.attention_mask[of_group], real], dim=1),
        position_ids=contexts.attention_mask.sum(dim=1)[of_group].unsqueeze(1) + steps,
        use_cache=True,
        **{_cache_argument(model): _rows_of(cache, of_group)},
    ).logits


@torch.no_grad()
def loglikelihoods(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[tuple[str, str]],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
    desc: str = "log-likelihoods",
    share_context: bool = True,
) -> list[Loglikelihood]:
    """Summed log-probability of each continuation after its context, as lm-evaluation-harness computes it.

    Inputs longer than ``max_length + 1`` tokens lose tokens from the left (the last token is
    only predicted, never fed). Requests with the same context run it once where the model
    allows (module docstring); ``share_context=False`` runs every request on its own.
    ``batch_size``: requests per forward pass on the per-request path; contexts per pass on the
    shared path, whose continuation passes hold no more tokens than their context pass. Logits
    are computed only where a continuation token is predicted (and at the padding beside it).
    """
    check_batch_size(batch_size)
    limit = max_length or context_length(model, tokenizer)
    pairs = encode_pairs(tokenizer, list(requests))
    results: list[Loglikelihood | None] = [None] * len(requests)
    by_context: dict[tuple[int, ...], list[int]] = defaultdict(list)
    alone = []
    for i, (ctx, cont) in enumerate(pairs):
        if len(cont) == 0:
            raise RomaError(f"continuation {requests[i][1]!r} encodes to zero tokens")
        if len(cont) > limit:
            results[i] = Loglikelihood(None, True, len(ctx), len(cont))
        elif len(ctx) + len(cont) > limit + 1:
            alone.append(i)  # cut from the left, by an amount that differs from choice to choice
        else:
            by_context[tuple(ctx)].append(i)
    groups = [g for g in by_context.values() if len(g) > 1]
    alone += [g[0] for g in by_context.values() if len(g) == 1]
    if groups and not (share_context and shares_context(model)):
        alone += [i for g in groups for i in g]
        groups = []
    pad = pad_id(tokenizer)
    with progress_bar(len(requests), desc, progress) as bar:
        bar.update(sum(r is not None for r in results))
        _shared_context(model, pairs, groups, batch_size, pad, results, bar)
        _per_request(model, pairs, alone, limit, batch_size, pad, results, bar)
    return [r for r in results if r is not None]


def score_continuation(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[MCExample],
    *,
    template: str | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
    share_context: bool = True,
) -> Scores:
    """Continuation scoring (lm-evaluation-harness ``multiple_choice``): ``acc`` and ``acc_norm``.

    All choices of all examples go to ``loglikelihoods`` as one list of requests.
    """
    limit = max_length or context_length(model, tokenizer)
    requests: list[tuple[str, str]] = []
    spans: list[tuple[int, int]] = []
    for ex in examples:
        reqs = continuation_requests(ex, template)
        spans.append((len(requests), len(requests) + len(reqs)))
        requests.extend(reqs)
    lls = loglikelihoods(
        model,
        tokenizer,
        requests,
        batch_size=batch_size,
        max_length=limit,
        progress=progress,
        desc="continuation scoring",
        share_context=share_context,
    )
    items: list[ItemResult] = []
    unusable: list[Unusable] = []
    for ex, (lo, hi) in zip(examples, spans):
        mine = lls[lo:hi]
        if any(ll.value is None for ll in mine):
            longest = max(ll.continuation_tokens for ll in mine)
            reason = f"a continuation of {longest} tokens does not fit the {limit}-token context; not scored"
            unusable.append(Unusable(ex.id, ex.task, reason, False))
            items.append(ItemResult(ex.id, ex.task, ex.answer, (), -1, -1, True, False))
            continue
        scores = tuple(float(ll.value) for ll in mine)  # type: ignore[arg-type]
        truncated = any(ll.truncated for ll in mine)
        if truncated:
            longest = max(ll.context_tokens + ll.continuation_tokens for ll in mine)
            unusable.append(
                Unusable(ex.id, ex.task, f"input of {longest} tokens cut from the left to {limit + 1}", True)
            )
        norm = [s / n for s, n in zip(scores, choice_lengths(ex))]
        items.append(
            ItemResult(ex.id, ex.task, ex.answer, scores, first_argmax(scores), first_argmax(norm), truncated)
        )
    return Scores(items, unusable)
