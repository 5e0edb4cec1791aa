"""The one multiple-choice example type every stage works with."""

from __future__ import annotations

import string
from dataclasses import dataclass, field

LETTERS = string.ascii_uppercase  # answer labels A..Z: at most 26 choices
MIN_CHOICES, MAX_CHOICES = 2, 26


@dataclass(frozen=True)
class MCExample:
    """A multiple-choice question.

    ``choices`` are the answer texts without labels and ``answer`` the 0-based index of the
    right one. ``task`` tags the source or task family (per-task figures group by it).

    Partial scoring (WinoGrande): when ``continuation`` is set, each choice is a *context*
    option and the model scores the fixed ``continuation`` after it; ``question`` then holds
    the sentence with a blank, for letter prompts.

    >>> ex = MCExample(id="q1", question="2 + 2 = ?", choices=("3", "4"), answer=1, task="math")
    >>> ex.answer_letter
    'B'
    """

    id: str
    question: str
    choices: tuple[str, ...]
    answer: int
    task: str = "default"
    continuation: str | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        # Validation happens in the loaders, which know the file and record to blame; this
        # only guards programmatic construction.
        if not (MIN_CHOICES <= len(self.choices) <= MAX_CHOICES):
            raise ValueError(f"{self.id}: {len(self.choices)} choices (need {MIN_CHOICES}..{MAX_CHOICES})")
        if not (0 <= self.answer < len(self.choices)):
            raise ValueError(f"{self.id}: answer index {self.answer} out of range")

    @property
    def answer_letter(self) -> str:
        return LETTERS[self.answer]

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.choices)]


def examples_sha256(examples: list[MCExample] | tuple[MCExample, ...]) -> str:
    """SHA-256 of what a set of examples asks and expects: ids, questions, choices, answers, tasks,
    continuations and metadata, in order (a key for results that were computed from them)."""
    import hashlib
    import json

    h = hashlib.sha256()
    for ex in examples:
        record = [ex.id, ex.question, list(ex.choices), ex.answer, ex.task, ex.continuation, ex.meta]
        h.update(json.dumps(record, sort_keys=True, default=str, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()
