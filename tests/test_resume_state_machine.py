"""Kill a training run at random points, resume it, repeat: the result is bit-identical to a run never killed.

A Hypothesis state machine drives one run per example. Each ``kill`` rule starts (or resumes) the run
and stops it dead at a point Hypothesis chooses: in the middle of an optimiser step, just before or
just after a state is written, half-way through a metrics line, or while the final checkpoint is
being written. ``resume`` runs it to the end. Between two attempts the model's routers are put back
to the base model's, as a new process would load them, and the run may be resumed with another
``save_every`` (a setting a resume may change). At the end the routers must equal, bit for bit, those
of the same run without kills, and ``metrics.jsonl`` must read as one run.

The kill is an exception no ``except Exception`` catches, raised in this process at the chosen point
(the run's ``finally`` blocks and atomic writes behave as in a real kill: the temporary file of a
write in flight goes, the file it would have replaced stays). Real SIGKILLs of a ``roma train``
process at four fixed points are in ``test_resume.py``; this test explores many more sequences in
the same time. A metrics line torn by the kill is written half, as a real kill would leave it.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule
from safetensors.torch import load_file

import moe_roma.methods.roma.trainer as trainer_module
from helpers.training import store_and_graph
from moe_roma.methods.roma.config import train_config
from moe_roma.methods.roma.trainer import RouterTrainer
from moe_roma.models.checkpoint import WEIGHTS_NAME, restore_routers, router_snapshot
from moe_roma.training.run_folder import METRICS_NAME
from moe_roma.training.state import STATE_NAME

EPOCHS, BATCH, N = 3, 2, 12
TOTAL = EPOCHS * N // BATCH  # optimiser steps of the whole run


class Killed(BaseException):
    """The process died here (a BaseException, like the SystemExit of a real kill: nothing swallows it)."""


@functools.cache
def setup():
    """A tiny model, its routing and neighbour graph, and the reference run nobody killed."""
    model, tok, store, graph = store_and_graph(n=N)
    base = router_snapshot(model)
    root = Path(tempfile.mkdtemp(prefix="resume-machine-"))
    reference = root / "reference"
    run_once(model, tok, store, graph, base, reference, save_every=1, resume=False)
    return model, tok, store, graph, base, root, reference


def config(save_every: int):
    return train_config(
        layers="last2",
        router_dropout=0.1,
        schedule={"epochs": EPOCHS, "batch_size": BATCH},
        optimizer={"lr": 0.02},
        runtime={"save_every": save_every},
        graph={"dedupe_threshold": 1.01},
    )


def run_once(model, tok, store, graph, base, out, save_every, resume):
    restore_routers(model, base)  # what a new process would load
    trainer = RouterTrainer(model, tok, store, config(save_every), out, graph=graph, progress=False)
    return trainer.train(resume=resume)


class KillPoint:
    """Patches one function of the trainer so that its ``n``-th call kills the run ``when`` asked."""

    def __init__(self, where: str, n: int) -> None:
        self.where, self.n, self.calls = where, n, 0

    def __enter__(self):
        target = {
            "step": "RouterTrainer.apply_step",
            "save-before": "save_train_state",
            "save-after": "save_train_state",
            "metrics-torn": "_append_jsonl",
            "final-save": "save_router_checkpoint",
        }[self.where]
        owner_name, _, name = target.rpartition(".")
        self.owner = getattr(trainer_module, owner_name) if owner_name else trainer_module
        self.name, self.original = name, getattr(self.owner, name)
        original, point = self.original, self

        def wrapped(*args, **kwargs):
            point.calls += 1
            if point.calls != point.n:
                return original(*args, **kwargs)
            if point.where == "save-after":
                original(*args, **kwargs)
            elif point.where == "metrics-torn":
                path, record = args
                line = json.dumps(record)
                with open(path, "a", encoding="utf-8") as fh:
                    fh.write(line[: len(line) // 2])  # the kill lands in the middle of the write
            raise Killed(point.where)

        setattr(self.owner, name, wrapped)
        return self

    def __exit__(self, *exc):
        setattr(self.owner, self.name, self.original)


class KillAndResume(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model, self.tok, self.store, self.graph, self.base, root, self.reference = setup()
        self.out = Path(tempfile.mkdtemp(dir=root))
        self.finished = False
        self.kills = 0

    def attempt(self, save_every: int, kill: KillPoint | None) -> None:
        try:
            if kill is None:
                run_once(
                    self.model, self.tok, self.store, self.graph, self.base, self.out, save_every, resume=True
                )
            else:
                with kill:
                    run_once(
                        self.model,
                        self.tok,
                        self.store,
                        self.graph,
                        self.base,
                        self.out,
                        save_every,
                        resume=True,
                    )
        except Killed:
            self.kills += 1
            assert not (self.out / WEIGHTS_NAME).exists() or kill.where == "final-save"
            return
        self.finished = True

    @precondition(lambda self: not self.finished)
    @rule(
        where=st.sampled_from(["step", "save-before", "save-after", "metrics-torn", "final-save"]),
        n=st.integers(1, TOTAL),
        save_every=st.integers(1, 3),
    )
    def kill(self, where, n, save_every):
        self.attempt(save_every, KillPoint(where, n))

    @precondition(lambda self: not self.finished)
    @rule(save_every=st.integers(1, 3))
    def resume(self, save_every):
        self.attempt(save_every, None)

    @precondition(lambda self: self.finished)
    @rule()
    def finished_run(self):
        """Nothing left to do: the run ended (Hypothesis needs a rule it may always take)."""

    def teardown(self) -> None:
        try:
            if not self.finished:
                self.attempt(1, None)
            assert self.finished
            want, got = load_file(self.reference / WEIGHTS_NAME), load_file(self.out / WEIGHTS_NAME)
            assert want.keys() == got.keys()
            for name in want:
                assert torch.equal(want[name], got[name]), (name, self.kills)
            assert not (self.out / STATE_NAME).exists()
            lines = [json.loads(x) for x in (self.out / METRICS_NAME).read_text().splitlines()]
            ref = [json.loads(x) for x in (self.reference / METRICS_NAME).read_text().splitlines()]
            assert [x["step"] for x in lines] == list(range(1, TOTAL + 1))
            assert lines == ref, "the metrics of a resumed run read as those of one run"
            assert not list(self.out.glob(".*.tmp"))
        finally:
            shutil.rmtree(self.out, ignore_errors=True)


KillAndResume.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=5,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
TestKillAndResume = KillAndResume.TestCase
