"""Prompt templates.

The default letter template lists the lettered choices and ends with ``Answer:``; the model's
answer is the letter whose next-token (`` A``, `` B``, ...) log-probability is highest.
A template is a Python format string with ``{question}`` and ``{choices}`` fields, where
``{choices}`` expands to one ``X. text`` line per choice.
"""

from __future__ import annotations

from moe_roma.data.example import LETTERS, MCExample

DEFAULT_LETTER_TEMPLATE = "Question: {question}\n{choices}\nAnswer:"
# lm-evaluation-harness's usual multiple_choice prompt: the choice follows as " " + text.
DEFAULT_CONTINUATION_TEMPLATE = "Question: {question}\nAnswer:"


def format_choices(choices: tuple[str, ...] | list[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))


def letter_prompt(example: MCExample, template: str | None = None) -> str:
    """The prompt whose next token is the answer letter.

    A file whose records are already complete letter prompts (``meta["letter_prompt"]``, e.g.
    llm-foundry's CommonsenseQA) is used as given unless a template is passed.

    >>> letter_prompt(MCExample("1", "2+2?", ("3", "4"), 1))
    'Question: 2+2?\\nA. 3\\nB. 4\\nAnswer:'
    """
    if template is None and example.meta.get("letter_prompt"):
        return example.meta["letter_prompt"]
    template = template or DEFAULT_LETTER_TEMPLATE
    return template.format(question=example.question, choices=format_choices(example.choices))


def answer_letter_tokens(n_choices: int) -> list[str]:
    """Texts whose first token is scored for each letter (a leading space, as after 'Answer:')."""
    return [f" {LETTERS[i]}" for i in range(n_choices)]


def continuation_context(example: MCExample, template: str | None = None) -> str:
    """The context after which each choice is scored as a continuation.

    Records that carry their own context (``meta["context"]``: llm-foundry's ``query``) are
    scored after it as given, as llm-foundry and lm-evaluation-harness do, unless a template is passed.
    """
    if template is None and example.meta.get("context"):
        return example.meta["context"]
    template = template or DEFAULT_CONTINUATION_TEMPLATE
    return template.format(question=example.question, choices=format_choices(example.choices))
