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


TEMPLATE_FIELDS = ("question", "choices")


def check_template_fields(template: str | None, scoring: str) -> None:
    """Refuse a template that cannot say what is asked: it must contain ``{question}``, and for letter
    scoring ``{choices}`` too (the letters would point at nothing); any other field is unknown.

    >>> check_template_fields("Q: {question}\\nA:", "continuation")
    >>> check_template_fields("Answer:", "continuation")
    Traceback (most recent call last):
    ...
    moe_roma.io.errors.RomaError: template 'Answer:' has no {question} field; every template needs it
    """
    import string

    from moe_roma.io.errors import RomaError

    if template is None:
        return
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise RomaError(
            f"template {template!r} is not a valid format string ({exc}); write a literal brace as "
            "{{ or }}"
        ) from None
    unknown = [f for f in fields if f not in TEMPLATE_FIELDS]
    if unknown:
        raise RomaError(
            f"template {template!r} has an unknown field {{{unknown[0]}}}; it may use only {{question}} "
            "and {choices}"
        )
    if "question" not in fields:
        raise RomaError(f"template {template!r} has no {{question}} field; every template needs it")
    if scoring == "letter" and "choices" not in fields:
        raise RomaError(
            f"template {template!r} has no {{choices}} field; letter scoring needs the lettered "
            "choices in the prompt"
        )
