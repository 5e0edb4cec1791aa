"""testbed: the bundled tiny MoE LLMs and their multiple-choice task suites.

Two testbeds ship (docs/testbed.md):

``downstream``  the RoMA paper's setting: pre-trained on general text, post-trained on
                downstream-format items, evaluated on other wordings and held-out families
                (``moe_roma.testbed.downstream``); the default everywhere (``DEFAULT_TESTBED``): the
                ``roma testbed`` actions, ``roma demo``, ``data: {testbed: true}`` of an experiment
                file, and these functions.
``in-domain``   the model was pre-trained on the post-training prompt format and task families
                (``moe_roma.testbed.tasks``); name it to use it.

``testbed_model_path(name)`` is a plain Hugging Face folder (an ``OlmoeForCausalLM`` with a
word-level tokenizer) built by ``roma testbed build``; ``load_testbed_splits(seed, testbed=name)``
regenerates the task suite deterministically.
"""

from __future__ import annotations

from pathlib import Path

from moe_roma.data.example import MCExample

_ASSETS = Path(__file__).resolve().parent / "assets"

TESTBEDS: tuple[str, ...] = ("in-domain", "downstream")
DEFAULT_TESTBED = "downstream"  # the one default: roma testbed, roma demo, `testbed: true`
_MODEL_DIRS = {"in-domain": _ASSETS / "model", "downstream": _ASSETS / "downstream" / "model"}


def _check(name: str) -> str:
    if name not in TESTBEDS:
        raise ValueError(f"unknown testbed {name!r} (choose from {', '.join(TESTBEDS)})")
    return name


def testbed_model_path(name: str = DEFAULT_TESTBED) -> Path:
    """The folder of a committed testbed model (``config.json``, weights, tokenizer)."""
    return _MODEL_DIRS[_check(name)]


# The name starts with "test": keep pytest from collecting it wherever a test module imports it.
testbed_model_path.__test__ = False  # type: ignore[attr-defined]


def testbed_split_names(name: str = DEFAULT_TESTBED) -> tuple[str, ...]:
    """The multiple-choice splits of a testbed (``load_testbed_splits`` keys, ``pretrain`` aside)."""
    if _check(name) == "downstream":
        from moe_roma.testbed.downstream import SPLITS

        return SPLITS
    from moe_roma.testbed.tasks import SPLITS

    return tuple(s for s in SPLITS if s != "pretrain")


testbed_split_names.__test__ = False  # type: ignore[attr-defined]


def load_testbed_splits(
    seed: int = 0, include_pretrain: bool = True, testbed: str = DEFAULT_TESTBED
) -> dict[str, list[MCExample]]:
    """A testbed's task-suite splits, regenerated deterministically from ``seed`` (seconds).

    ``in-domain``: ``pretrain``, ``train``, ``in_dist``, ``shifted``, ``heldout_tasks``;
    ``include_pretrain=False`` leaves ``pretrain`` empty (faster; other splits unchanged).
    ``downstream``: ``train``, ``validation``, ``in_dist``, ``shifted``, ``heldout_tasks``; its
    pre-training corpus is text, not questions (``moe_roma.testbed.downstream.pretrain_corpus``),
    so ``include_pretrain`` does not apply. Seed 0 gives the splits the committed models were
    built and measured with.
    """
    if _check(testbed) == "downstream":
        from moe_roma.testbed.downstream import build_downstream_suite

        return build_downstream_suite(seed)
    from moe_roma.testbed.tasks import build_task_suite

    return build_task_suite(seed, include_pretrain=include_pretrain)


__all__ = ["DEFAULT_TESTBED", "TESTBEDS", "load_testbed_splits", "testbed_model_path", "testbed_split_names"]
