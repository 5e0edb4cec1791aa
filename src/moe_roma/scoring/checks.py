"""Checks of what is about to be scored that warn rather than refuse: a --max-length past the model's
context, text the tokenizer mostly cannot read (``<unk>``), and accuracy no better than guessing."""

from __future__ import annotations

from moe_roma.io.errors import warn
from moe_roma.models.inputs import UNKNOWN_WARN_RATE, unknown_token_rate
from moe_roma.scoring.stats import chance_level


def warn_on_context(asked: int | None, context: int) -> None:
    if asked is not None and asked > context:
        warn(
            f"--max-length {asked} is longer than the model's context ({context} positions); prompts longer "
            "than the context run positions the model never saw"
        )


def warn_on_unknown_tokens(tokenizer, examples) -> None:
    """Warn when the data's words are largely unknown to the tokenizer (``<unk>``)."""
    texts = [t for ex in examples[:1000] for t in (ex.question, *ex.choices)]
    rate = unknown_token_rate(tokenizer, texts)
    if rate is not None and rate >= UNKNOWN_WARN_RATE:
        unk = getattr(tokenizer, "unk_token", "<unk>")
        warn(
            f"{rate:.0%} of the data's tokens are the tokenizer's unknown token {unk}: the model cannot read "
            "much of this text, so its answers and routing mean little"
        )


def warn_if_near_chance(correct, n_choices, scoring: str, what: str, hint: str | None = None) -> None:
    """Warn when accuracy is no better than guessing, naming the other scoring mode to try (or ``hint``)."""
    near, acc, chance = chance_level(list(correct), list(n_choices))
    if not near:
        return
    other = "continuation" if scoring == "letter" else "letter"
    if hint is None:
        hint = (
            f"if the model was not trained to answer with a letter, try --scoring {other}"
            if scoring == "letter"
            else f"try --scoring {other}, or a --template in the prompt format the model was trained on"
        )
    warn(
        f"{what} {acc:.1%} is at chance level ({chance:.1%} for these choice counts) with {scoring} scoring; "
        f"{hint}"
    )
