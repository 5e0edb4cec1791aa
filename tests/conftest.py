"""Test-wide settings."""

from __future__ import annotations

import os

import torch

# Tiny models on a 2-core machine: one intra-op thread avoids oversubscription (tens of times faster
# when other processes share the cores), and subprocesses inherit it through the environment.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)
