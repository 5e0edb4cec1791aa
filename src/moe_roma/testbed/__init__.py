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


# The name starts with "test": keep pytest from collecting it wherever a test module imports it.
testbed_model_path.__test__ = False  # type: ignore[attr-defined]


def load_testbed_splits(seed: int = 0, include_pretrain: bool = True) -> dict[str, list[MCExample]]:
    """All task-suite splits (``pretrain``, ``train``, ``in_dist``, ``shifted``,
    ``heldout_tasks``), regenerated deterministically from ``seed`` (about 3 s).

    Seed 0 gives the splits the committed model was built and measured with.
    ``include_pretrain=False`` leaves ``pretrain`` empty (faster; other splits unchanged).
    """
    from moe_roma.testbed.tasks import build_task_suite

    return build_task_suite(seed, include_pretrain=include_pretrain)


__all__ = ["load_testbed_splits", "testbed_model_path"]
