"""The shared-context path (each question's context run once, its cache expanded over the choices)
gives the per-request path's log-likelihoods, and steps aside where it does not apply."""

from __future__ import annotations

import pytest
import torch

from helpers.tiny_models import build_tiny_model, build_tiny_tokenizer
from moe_roma.data.example import MCExample
from moe_roma.scoring.continuation import (
    continuation_requests,
    loglikelihoods,
    score_continuation,
    shares_context,
)
from moe_roma.scoring.logprobs import summed_logprobs

WORDS = [
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "red",
    "blue",
    "green",
    "cat",
    "dog",
    "bird",
    "fish",
    "big",
    "small",
]
TOLERANCE = 5e-5  # float32 noise of a different batch layout; the two paths agree to ~2e-6 in practice


def words(start: int, n: int) -> str:
    return " ".join(WORDS[(start + 7 * j) % len(WORDS)] for j in range(n))


def make_examples(n: int = 12, seed: int = 0) -> list[MCExample]:
    """2 to 5 choices of 1 to 4 words (one-token continuations included), contexts of 4 to 30 tokens."""
    out = []
    for i in range(n):
        k = 2 + i % 4
        choices = tuple(words(seed + 5 * i + 11 * c, 1 + (i + c) % 4) for c in range(k))
        question = "what is " + words(seed + 3 * i, 1 + (7 * i) % 23) + " ?"
        out.append(MCExample(f"q{i}", question, choices, i % k, task="t"))
    return out


def requests_of(examples: list[MCExample]) -> list[tuple[str, str]]:
    return [r for ex in examples for r in continuation_requests(ex)]


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


@pytest.mark.parametrize("family", ["olmoe", "qwen2_moe", "mixtral", "deepseek_v3"])
@pytest.mark.parametrize("batch_size", [3, 8])  # 3: fewer rows than some questions have choices
def test_shared_context_gives_the_per_request_log_likelihoods(tok, family, batch_size):
    model = build_tiny_model(family)
    requests = requests_of(make_examples())
    shared = loglikelihoods(model, tok, requests, batch_size=batch_size, progress=False)
    alone = loglikelihoods(model, tok, requests, batch_size=batch_size, progress=False, share_context=False)
    assert shares_context(model)
    assert all(ll.shared for ll in shared) and not any(ll.shared for ll in alone)
    assert [ll.value for ll in shared] == pytest.approx([ll.value for ll in alone], abs=TOLERANCE)
    assert [(ll.context_tokens, ll.continuation_tokens) for ll in shared] == [
        (ll.context_tokens, ll.continuation_tokens) for ll in alone
    ]


@pytest.mark.parametrize(
    "family",
    [
        "qwen3_next",  # linear attention (gated delta net) between attention layers: a recurrent state
        "jamba",  # Mamba layers
        "deepseek_v32",  # a sparse-attention indexer, whose key choice differs when run after a cache
    ],
)
def test_models_whose_cache_cannot_be_expanded_take_the_per_request_path(tok, family):
    model = build_tiny_model(family)
    assert not shares_context(model)
    requests = requests_of(make_examples(6))
    result = loglikelihoods(model, tok, requests, batch_size=4, progress=False)
    alone = loglikelihoods(model, tok, requests, batch_size=4, progress=False, share_context=False)
    assert not any(ll.shared for ll in result)
    assert [ll.value for ll in result] == [ll.value for ll in alone]


def test_partial_scoring_and_truncated_items_take_the_per_request_path_in_a_mixed_batch(tok):
    model = build_tiny_model("olmoe")
    examples = make_examples(8)
    partial = MCExample("w1", "the cat _ big .", ("the cat is", "the dog is"), 1, continuation="big .")
    long = MCExample("long", "what is " + " ".join(WORDS * 2) + " ?", ("red", "blue green"), 0)
    requests = requests_of([*examples, partial, long])
    limit = 40  # cuts the long question's inputs (45+ tokens) from the left, and nothing else
    shared = loglikelihoods(model, tok, requests, batch_size=5, max_length=limit, progress=False)
    alone = loglikelihoods(
        model, tok, requests, batch_size=5, max_length=limit, progress=False, share_context=False
    )
    n_plain = len(requests_of(examples))
    assert all(ll.shared for ll in shared[:n_plain])
    assert not any(ll.shared for ll in shared[n_plain:])  # the partial item's two contexts, the cut item
    assert [ll.truncated for ll in shared] == [False] * (n_plain + 2) + [True, True]
    assert [ll.value for ll in shared] == pytest.approx([ll.value for ll in alone], abs=TOLERANCE)


def test_scores_and_predictions_do_not_depend_on_the_path(tok):
    model = build_tiny_model("olmoe", num_layers=2)
    with torch.no_grad():
        model.lm_head.weight.mul_(20)  # confident: predictions vary from item to item
    examples = make_examples(16, seed=3)
    shared = score_continuation(model, tok, examples, batch_size=6, progress=False)
    alone = score_continuation(model, tok, examples, batch_size=6, progress=False, share_context=False)
    assert len({it.pred for it in shared.items}) > 1
    assert [(it.pred, it.pred_norm) for it in shared.items] == [(it.pred, it.pred_norm) for it in alone.items]
    for a, b in zip(shared.items, alone.items):
        assert a.scores == pytest.approx(b.scores, abs=TOLERANCE)


def test_summed_logprobs_reads_each_rows_span():
    logits = torch.randn(2, 5, 7)
    targets = torch.randint(0, 7, (2, 5))
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    lengths = torch.tensor([2, 3])
    # Right-aligned (left-padded rows): the last ``length`` positions.
    right = summed_logprobs(logits, targets, lengths)
    assert right.tolist() == pytest.approx([float(picked[0, 3:].sum()), float(picked[1, 2:].sum())])
    # Ending before ``ends``: positions [end - length, end).
    ends = torch.tensor([2, 4])
    inner = summed_logprobs(logits, targets, lengths, ends)
    assert inner.tolist() == pytest.approx([float(picked[0, 0:2].sum()), float(picked[1, 1:4].sum())])
