"""Test-wide settings and shared fixtures (helpers live in ``tests/helpers``)."""

from __future__ import annotations

import os

import pytest
import torch

# Tiny models on a 2-core machine: one intra-op thread avoids oversubscription (tens of times faster
# when other processes share the cores), and subprocesses inherit it through the environment.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)

from helpers.examples import make_examples, write_data  # noqa: E402  (after the environment is set)
from helpers.tiny_models import save_tiny_model  # noqa: E402
from moe_roma.cli import main  # noqa: E402


@pytest.fixture(scope="session")
def resume_workspace(tmp_path_factory):
    """A tiny OLMoE folder, 24 examples as JSONL and their collected routing (layers last2): what the
    resume and multi-process training tests start from."""
    w = tmp_path_factory.mktemp("resume")
    save_tiny_model(w / "model", "olmoe", num_layers=4)
    write_data(w / "train.jsonl", make_examples(24))
    assert (
        main(
            [
                "collect",
                "--model",
                str(w / "model"),
                "--data",
                str(w / "train.jsonl"),
                "--out",
                str(w / "routing.json"),
                "--layers",
                "last2",
                "--no-progress",
            ]
        )
        == 0
    )
    return w
