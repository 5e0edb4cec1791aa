"""Letter and continuation scoring against hand computation, batching, truncation and acc_norm."""

from __future__ import annotations

import pytest
import torch

from helpers.tiny_models import build_tiny_model, build_tiny_tokenizer
from moe_roma.data.example import MCExample
from moe_roma.data.prompts import continuation_context, letter_prompt
from moe_roma.models.inputs import encode_pair, encode_text, letter_token_ids
from moe_roma.scoring import continuation as scoring
from moe_roma.scoring.continuation import Loglikelihood, continuation_requests, score_continuation
from moe_roma.scoring.engine import evaluate
from moe_roma.scoring.letter import score_letter

WORDS = (  # noqa: SIM905
    "one two three four five six seven eight nine ten red blue green cat dog bird fish big small"
).split()


def make_examples(n: int = 12, seed: int = 0) -> list[MCExample]:
    g = torch.Generator().manual_seed(seed)

    def words(k: int) -> str:
        return " ".join(WORDS[int(j)] for j in torch.randint(0, len(WORDS), (k,), generator=g))

    out = []
    for i in range(n):
        k = 2 + i % 4  # 2..5 choices: letters beyond an item's choices must be ignored
        choices = tuple(words(1 + (i + c) % 4) for c in range(k))
        out.append(MCExample(f"q{i}", "what is " + words(2 + i % 5) + " ?", choices, i % k, task=f"t{i % 3}"))
    return out


@pytest.fixture(scope="module")
def model_and_tok():
    model = build_tiny_model("olmoe", num_layers=2)
    with torch.no_grad():
        model.lm_head.weight.mul_(20)  # confident, so predictions differ from item to item
    return model, build_tiny_tokenizer()


def full_log_probs(model, ids: list[int]) -> torch.Tensor:
    """Unbatched, unpadded forward over every position: the reference the scorers must reproduce."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


def test_letter_scoring_equals_hand_computation(model_and_tok):
    model, tok = model_and_tok
    examples = make_examples(12)
    scores = score_letter(model, tok, examples, batch_size=5, progress=False)
    letters = letter_token_ids(tok, 5)
    for ex, item in zip(examples, scores.items):
        lp = full_log_probs(model, encode_text(tok, letter_prompt(ex)))[-1]
        expected = [float(lp[letters[i]]) for i in range(len(ex.choices))]
        assert item.id == ex.id
        assert item.scores == pytest.approx(expected, abs=1e-4)
        assert item.pred == max(range(len(expected)), key=expected.__getitem__)
    assert len({it.pred for it in scores.items}) > 1, "a constant prediction would hide bugs"


def test_continuation_scoring_equals_hand_computation(model_and_tok):
    model, tok = model_and_tok
    examples = make_examples(8)
    scores = score_continuation(model, tok, examples, batch_size=3, progress=False)
    for ex, item in zip(examples, scores.items):
        context = continuation_context(ex)
        expected = []
        for choice in ex.choices:
            ctx, cont = encode_pair(tok, context, " " + choice)
            lp = full_log_probs(model, ctx + cont)
            expected.append(sum(float(lp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont)))
        assert item.scores == pytest.approx(expected, abs=1e-3)
        norm = [s / len(c) for s, c in zip(expected, ex.choices)]
        assert item.pred == max(range(len(expected)), key=expected.__getitem__)
        assert item.pred_norm == max(range(len(norm)), key=norm.__getitem__)
    assert len({it.pred for it in scores.items}) > 1


def test_partial_scoring_scores_the_continuation_after_each_context(model_and_tok):
    model, tok = model_and_tok
    ex = MCExample("w1", "the cat _ big .", ("the cat is", "the dog is"), 1, continuation="big .")
    assert continuation_requests(ex) == [("the cat is", " big ."), ("the dog is", " big .")]
    item = score_continuation(model, tok, [ex], progress=False).items[0]
    for ctx_text, score in zip(ex.choices, item.scores):
        ctx, cont = encode_pair(tok, ctx_text, " big .")
        lp = full_log_probs(model, ctx + cont)
        assert score == pytest.approx(
            sum(float(lp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont)), abs=1e-3
        )


@pytest.mark.parametrize("scoring_name", ["letter", "continuation"])
def test_batch_size_does_not_change_results(model_and_tok, scoring_name):
    model, tok = model_and_tok
    examples = make_examples(10, seed=1)
    one = evaluate(model, tok, examples, scoring=scoring_name, batch_size=1, progress=False)
    many = evaluate(model, tok, examples, scoring=scoring_name, batch_size=7, progress=False)
    assert [it.pred for it in one.items] == [it.pred for it in many.items]
    for a, b in zip(one.items, many.items):
        assert a.scores == pytest.approx(b.scores, abs=1e-4)


def test_acc_norm_divides_by_the_choice_length_as_lm_eval_does(monkeypatch):
    # lm-evaluation-harness divides by len(choice) (no leading space): -3/2 < -8/6, so the longer
    # choice wins acc_norm while the shorter wins acc. Dividing by len(" " + choice) would not flip.
    ex = MCExample("n1", "q", ("ab", "abcdef"), 1)

    def fake(model, tokenizer, requests, **kwargs):
        return [Loglikelihood(-3.0, False, 4, 1), Loglikelihood(-8.0, False, 4, 2)][: len(requests)]

    monkeypatch.setattr(scoring, "loglikelihoods", fake)
    monkeypatch.setattr(scoring, "context_length", lambda model, tok=None: 128)
    item = score_continuation(None, None, [ex], progress=False).items[0]
    assert (item.pred, item.pred_norm) == (0, 1)
    assert (item.correct, item.correct_norm) == (False, True)


def test_truncated_items_are_scored_and_listed(model_and_tok):
    model, tok = model_and_tok
    examples = make_examples(6)
    for name in ("letter", "continuation"):
        result = evaluate(model, tok, examples, scoring=name, max_length=6, progress=False)
        assert result.n == len(examples)  # still scored
        listed = {u.id for u in result.unusable}
        assert listed == {it.id for it in result.items if it.truncated} and listed
        assert all(u.scored for u in result.unusable)
        assert result.summary()["n_unusable"] == len(listed)


def test_unscoreable_items_are_listed_not_dropped(model_and_tok):
    model, tok = model_and_tok
    long_choice = MCExample("long", "what is one ?", ("one two three four five six", "two"), 0, task="t")
    examples = [*make_examples(3), long_choice]
    result = evaluate(model, tok, examples, scoring="continuation", max_length=4, progress=False)
    assert result.n_examples == 4 and result.n == 3
    (unscored,) = [u for u in result.unusable if not u.scored]
    assert unscored.id == "long" and "does not fit" in unscored.reason
    assert [it.id for it in result.items] == [ex.id for ex in examples]  # aligned with the input
    assert result.items[-1].pred == -1 and not result.items[-1].scored


def test_summary_has_overall_and_per_task_figures(model_and_tok):
    model, tok = model_and_tok
    examples = make_examples(9)
    result = evaluate(model, tok, examples, scoring="continuation", progress=False)
    summary = result.summary()
    assert set(summary) >= {
        "n",
        "acc",
        "acc_ci",
        "acc_norm",
        "tasks",
        "unusable",
        "seconds",
        "examples_per_s",
    }
    assert set(summary["tasks"]) == {"t0", "t1", "t2"}
    assert sum(t["n"] for t in summary["tasks"].values()) == summary["n"] == 9
    weighted = sum(t["acc"] * t["n"] for t in summary["tasks"].values()) / 9
    assert weighted == pytest.approx(summary["acc"])
    assert "examples/s" in result.line("base")
    letter = evaluate(model, tok, examples, scoring="letter", progress=False).summary()
    assert "acc_norm" not in letter and "acc_norm" not in letter["tasks"]["t0"]


def test_progress_bar_can_be_silenced(model_and_tok, capsys):
    model, tok = model_and_tok
    evaluate(model, tok, make_examples(3), scoring="continuation", progress=False)
    assert capsys.readouterr().err == ""
    evaluate(model, tok, make_examples(3), scoring="continuation", progress=True)
    assert "continuation scoring" in capsys.readouterr().err


def test_letter_scoring_can_record_routing(model_and_tok):
    from moe_roma.models.discovery import discover_routers
    from moe_roma.models.hooks.capture import RoutingCapture

    model, tok = model_and_tok
    info = discover_routers(model)
    with RoutingCapture(info) as cap:
        scores = score_letter(model, tok, make_examples(4), batch_size=3, progress=False, capture=cap)
    for item in scores.items:
        assert item.routing.shape == (len(info.moe_layers), info.num_experts)
        assert torch.allclose(item.routing.sum(-1), torch.ones(len(info.moe_layers)), atol=1e-5)
    assert scores.predictions == [it.pred for it in scores.items]
