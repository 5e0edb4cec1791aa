"""testbed: the bundled tiny MoE LLM and its multiple-choice task suite.

``testbed_model_path()`` is a plain Hugging Face folder (an ``OlmoeForCausalLM`` with a
word-level tokenizer) built by ``roma testbed build``; ``load_testbed_splits(seed)``
regenerates the task suite deterministically. See docs/testbed.md.
"""

from __future__ import annotations

from pathlib import Path

from moe_roma.data.example import MCExample

_ASSETS = Path(__file__).resolve().parent / "assets"


def testbed_model_path() -> Path:
    """The folder of the committed testbed model (``config.json``, weights, tokenizer)."""
    return _ASSETS / "model"


def load_testbed_splits(seed: int = 0) -> dict[str, list[MCExample]]:
    """All task-suite splits (``pretrain``, ``train``, ``in_dist``, ``shifted``,
    ``heldout_tasks``), regenerated deterministically from ``seed``.

    Seed 0 gives the splits the committed model was built and measured with.
    """
    from moe_roma.testbed.tasks import build_task_suite

    return build_task_suite(seed)


__all__ = ["load_testbed_splits", "testbed_model_path"]
