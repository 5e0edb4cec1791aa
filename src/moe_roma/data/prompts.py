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


def letter_prompt(example: MCExample, template: str = DEFAULT_LETTER_TEMPLATE) -> str:
    """The prompt whose next token is the answer letter.

    >>> letter_prompt(MCExample("1", "2+2?", ("3", "4"), 1))
    'Question: 2+2?\\nA. 3\\nB. 4\\nAnswer:'
    """
    return template.format(question=example.question, choices=format_choices(example.choices))


def answer_letter_tokens(n_choices: int) -> list[str]:
    """Texts whose first token is scored for each letter (a leading space, as after 'Answer:')."""
    return [f" {LETTERS[i]}" for i in range(n_choices)]


def continuation_context(example: MCExample, template: str = DEFAULT_CONTINUATION_TEMPLATE) -> str:
    """The context after which each choice is scored as a continuation."""
    return template.format(question=example.question, choices=format_choices(example.choices))
