"""Small multiple-choice data sets for tests, in memory and as files."""

from __future__ import annotations

import json

import torch

from moe_roma.data.example import LETTERS, MCExample

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
]


def make_examples(n: int = 10) -> list[MCExample]:
    """``n`` deterministic items over the tiny tokenizer's words, with 2 to 4 choices and two tasks."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        k = 2 + i % 3  # 2..4 choices, so letters beyond the choices must be ignored
        words = [WORDS[int(j)] for j in torch.randint(0, len(WORDS), (3 + i % 4,), generator=g)]
        choices = tuple(WORDS[(i + c) % len(WORDS)] for c in range(k))
        out.append(MCExample(f"s{i}", "what is " + " ".join(words) + " ?", choices, i % k, task=f"t{i % 2}"))
    return out


def write_data(path, examples):
    """Write ``examples`` as RoMA-code evaluation JSONL (lettered choices); returns the path."""
    with open(path, "w") as fh:
        for ex in examples:
            choices = [f"{LETTERS[i]}) {c}" for i, c in enumerate(ex.choices)]
            fh.write(
                json.dumps(
                    {
                        "id": ex.id,
                        "question": ex.question,
                        "choices": choices,
                        "answer": ex.answer_letter,
                        "task": ex.task,
                    }
                )
                + "\n"
            )
    return path
