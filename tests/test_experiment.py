"""``roma experiment`` end to end on a tiny model and files, with every method kind and an ablation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from helpers.examples import make_examples, write_data
from helpers.tiny_models import save_tiny_model
from moe_roma.cli import main
from moe_roma.io.lock import LOCK_NAME, FolderLock


@pytest.mark.slow
def test_experiment_grid_writes_tidy_rows_table_and_plot(tmp_path, capsys):
    save_tiny_model(tmp_path / "model", "olmoe", num_layers=4)
    examples = make_examples(40)
    write_data(tmp_path / "train.jsonl", examples[:24])
    write_data(tmp_path / "a.jsonl", examples[24:32])
    write_data(tmp_path / "b.jsonl", examples[32:])
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"""
name: tiny
data:
  model: {tmp_path / "model"}
  train: {tmp_path / "train.jsonl"}
  eval: {{in_dist: {tmp_path / "a.jsonl"}, heldout_tasks: {tmp_path / "b.jsonl"}}}
scoring: letter
seeds: [0, 1]
train:
  layers: last2
  scoring: letter
  schedule: {{epochs: 1, batch_size: 8}}
  optimizer: {{lr: 0.01}}
  graph: {{dedupe_threshold: 1.01}}
methods:
  - {{name: base, kind: base}}
  - {{name: router_tuning, kind: train, overrides: {{regularizer.name: none}}}}
  - {{name: roma, kind: train}}
  - {{name: c3po, kind: c3po, options: {{k: 2, dedupe_threshold: 1.01}}}}
  - {{name: oracle, kind: oracle, options: {{steps: 3}}}}
ablations:
  - {{axis: train_fraction, values: [0.5]}}
  - {{axis: position, values: [first]}}
  - {{axis: layers, values: [all]}}
""")
    code = main(["experiment", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    methods = {
        "base",
        "router_tuning",
        "roma",
        "c3po",
        "oracle",
        "roma[train_fraction=0.5]",
        "roma[position=first]",
        "roma[layers=all]",
    }
    assert {r["method"] for r in results["rows"]} == methods
    assert len(results["rows"]) == len(methods) * 2 * 2  # methods x seeds x splits
    for r in results["rows"]:
        assert set(r) >= {"method", "split", "seed", "accuracy", "n", "setting"}
        assert 0 <= r["accuracy"] <= 1 and r["n"] == 8
    base = {(r["split"], r["seed"]): r["accuracy"] for r in results["rows"] if r["method"] == "base"}
    oracle = {(r["split"], r["seed"]): r["accuracy"] for r in results["rows"] if r["method"] == "oracle"}
    assert all(oracle[k] >= base[k] for k in base), "the oracle bound is never below the base"
    assert any(r.get("cost_vs_base", 0) > 1 for r in results["rows"] if r["method"] == "c3po")
    assert "in_dist" in (tmp_path / "out" / "table.md").read_text()
    assert (tmp_path / "out" / "accuracy.png").stat().st_size > 1000
    assert "roma" in results["ctgi"] and "base/seed0" in results["metrics"]


def test_bad_experiment_configs_are_refused(tmp_path, capsys):
    for text, needle in [
        ("methods: []\n", "missing 'data'"),
        ("data: {testbed: true}\nmethods: [{name: x, kind: magic}]\n", "unknown kind"),
        ("data: {testbed: true}\nmethods: [{name: r, overrides: {lrr: 1}}]\n", "unknown training settings"),
        ("data: {testbed: true}\nnope: 1\nmethods: []\n", "unknown key 'nope'"),
        ("data: {testbed: true, tesbed: true}\nmethods: [b]\n", "did you mean 'data.testbed'"),
        ("data: [\n", "malformed YAML"),
    ]:
        path = tmp_path / "c.yaml"
        path.write_text(text)
        assert main(["experiment", str(path)]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err


def test_validation_is_held_out_of_train_for_every_task_and_never_trained_on(tmp_path):
    from moe_roma.experiments.config import DataConfig
    from moe_roma.experiments.grid import hold_out_validation, load_data

    examples = make_examples(40)
    train, validation = hold_out_validation(examples, 0.2)
    assert len(validation) == 8 and len(train) == 32
    assert {ex.id for ex in train}.isdisjoint(ex.id for ex in validation)
    write_data(tmp_path / "train.jsonl", examples)
    write_data(tmp_path / "a.jsonl", examples[:5])
    cfg = {
        "data": {
            "model": "m",
            "train": str(tmp_path / "train.jsonl"),
            "eval": {"test": str(tmp_path / "a.jsonl")},
            "validation": 0.25,
        }
    }
    _, train, splits = load_data(DataConfig.from_dict(cfg["data"]))
    assert list(splits) == ["validation", "test"] and len(splits["validation"]) == 10 and len(train) == 30
    assert {ex.id for ex in train}.isdisjoint(ex.id for ex in splits["validation"])
    testbed = {"data": {"testbed": "in-domain", "validation": 0.2, "splits": ["validation"]}}
    _, train, splits = load_data(DataConfig.from_dict(testbed["data"]))
    assert list(splits) == ["validation"] and len(splits["validation"]) == 192 and len(train) == 768
    tasks = {ex.task for ex in splits["validation"]}
    assert tasks == {ex.task for ex in train}, "every training task keeps a share in validation"


def test_validation_settings_are_checked(tmp_path, capsys):
    for text, needle in [
        ("data: {testbed: true, validation: 0.9}\nmethods: [{name: b, kind: base}]\n", "'data.validation'"),
        (
            "data: {testbed: in-domain, splits: [validation]}\nmethods: [{name: b, kind: base}]\n",
            "needs 'data.validation'",
        ),
        (
            "data: {testbed: true, splits: [valid]}\nmethods: [{name: b, kind: base}]\n",
            "unknown testbed splits",
        ),
    ]:
        path = tmp_path / "c.yaml"
        path.write_text(text)
        assert main(["experiment", str(path), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err


def test_thread_count_must_be_positive(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("data: {testbed: true}\nmethods: [{name: b, kind: base}]\n")
    assert main(["experiment", str(path), "--threads", "0", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "argument --threads: must be at least 1, got 0" in err and not (tmp_path / "o").exists()


def _three_method_grid(tmp_path, extra: str = ""):
    """A tiny model, data and grid file: base, router tuning and RoMA over seeds 0 and 1."""
    save_tiny_model(tmp_path / "model", "olmoe", num_layers=4)
    examples = make_examples(24)
    write_data(tmp_path / "train.jsonl", examples[:16])
    write_data(tmp_path / "a.jsonl", examples[16:])
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"""
name: small
data:
  model: {tmp_path / "model"}
  train: {tmp_path / "train.jsonl"}
  eval: {{in_dist: {tmp_path / "a.jsonl"}}}
scoring: letter
seeds: [0, 1]
{extra}
train:
  layers: last2
  scoring: letter
  schedule: {{epochs: 1, batch_size: 8}}
  optimizer: {{lr: 0.01}}
  graph.dedupe_threshold: 1.01
methods:
  - {{name: base, kind: base}}
  - {{name: router_tuning, kind: train, overrides: {{regularizer.name: none}}}}
  - {{name: roma, kind: train}}
""")
    return cfg


def test_an_interrupted_grid_resumes_with_the_same_results(tmp_path, capsys):
    cfg = _three_method_grid(tmp_path)
    out = tmp_path / "out"
    assert main(["experiment", str(cfg), "--out", str(out), "--no-progress"]) == 0
    full = json.loads((out / "results.json").read_text())["rows"]
    lines = (out / "outcomes.jsonl").read_text().splitlines()
    assert len(lines) == 5  # base once (seed-free), two trained methods x two seeds
    # As if killed after two method runs, the second one torn mid-line (so before results.json).
    (out / "outcomes.jsonl").write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:40])
    (out / "results.json").unlink()
    torn = (out / "outcomes.jsonl").read_bytes()
    capsys.readouterr()
    # A second worker on the same folder is refused while the first holds it, and changes nothing.
    with FolderLock(out, "roma experiment"):
        assert main(["experiment", str(cfg), "--out", str(out), "--no-progress", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "roma experiment" in err and str(os.getpid()) in err
    assert (out / "outcomes.jsonl").read_bytes() == torn
    (out / LOCK_NAME).write_text("999999999 roma experiment\n")  # left by a killed run: taken over
    assert main(["experiment", str(cfg), "--out", str(out), "--no-progress", "--resume"]) == 0
    assert not (out / LOCK_NAME).exists()
    log = capsys.readouterr().out
    assert "resuming: 2 method runs already done" in log
    resumed = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["method"], r["split"], r["seed"], r["accuracy"]) for r in resumed] == [
        (r["method"], r["split"], r["seed"], r["accuracy"]) for r in full
    ]
    # A finished grid is not run again without --overwrite; with it the grid starts over.
    capsys.readouterr()
    assert main(["experiment", str(cfg), "--out", str(out), "--no-progress"]) == 2
    assert "already holds a finished experiment folder" in capsys.readouterr().err
    assert main(["experiment", str(cfg), "--out", str(out), "--no-progress", "--overwrite"]) == 0
    assert "resuming" not in capsys.readouterr().out
    # --resume on the same file finds nothing to do; given another seed, it keeps the finished runs,
    # runs the new seed's and rewrites the summary.
    assert main(["experiment", str(cfg), "--out", str(out), "--no-progress", "--resume"]) == 2
    assert (
        "already holds a finished experiment folder (results.json); nothing to resume"
        in capsys.readouterr().err
    )
    cfg.write_text(cfg.read_text().replace("seeds: [0, 1]", "seeds: [0, 1, 2]"))
    assert main(["experiment", str(cfg), "--out", str(out), "--no-progress", "--resume"]) == 0
    log = capsys.readouterr().out
    assert "holds a finished grid of another experiment file; its finished runs are kept" in log
    assert "resuming: 5 method runs already done" in log
    assert len((out / "outcomes.jsonl").read_text().splitlines()) == 7  # the two new runs, appended
    extended = json.loads((out / "results.json").read_text())
    assert extended["config"]["experiment"]["seeds"] == [0, 1, 2]
    assert sorted({r["seed"] for r in extended["rows"] if r["method"] == "roma"}) == [0, 1, 2]


def test_the_report_gives_each_methods_accuracy_per_task_family(tmp_path):
    cfg = _three_method_grid(tmp_path)
    out = tmp_path / "out"
    assert main(["experiment", str(cfg), "--out", str(out), "--no-progress"]) == 0
    # The expected means, from the items' own answers: a task family's share right, averaged over seeds.
    tasks = {ex.id: ex.task for ex in make_examples(24)[16:]}
    ids = [json.loads(line)["id"] for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    expected: dict = {}
    for line in (out / "outcomes.jsonl").read_text().splitlines():
        record = json.loads(line)
        correct = record["outcome"]["splits"]["in_dist"]["correct"]
        for task in ("t0", "t1"):
            flags = [c for c, i in zip(correct, ids) if tasks[i] == task]
            expected.setdefault(task, {}).setdefault(record["run"].split("/")[0], []).append(
                sum(flags) / len(flags)
            )
    reported = json.loads((out / "results.json").read_text())["tasks"]["in_dist"]
    assert list(reported) == ["t0", "t1"]
    for task, per_method in expected.items():
        assert list(reported[task]) == ["base", "router_tuning", "roma"]
        for method, accs in per_method.items():
            assert reported[task][method] == pytest.approx(sum(accs) / len(accs))
    table = (out / "table.md").read_text()
    section = table.split("## Accuracy per task family")[1].split("\n## ")[0]
    assert "| task | base | router_tuning | roma |" in section
    t0 = reported["t0"]
    assert f"| t0 | {t0['base']:.1%} | {t0['router_tuning']:.1%} | {t0['roma']:.1%} |" in section
    # scripts/per_task.py prints the same section from outcomes.jsonl alone.
    script = Path(__file__).resolve().parents[1] / "scripts" / "per_task.py"
    printed = subprocess.run(
        [sys.executable, str(script), str(out)], capture_output=True, text=True, check=True
    ).stdout
    assert "runs per method: base 1, router_tuning 2, roma 2" in printed
    assert section.strip() in printed
    missing = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "outcomes.jsonl" in missing.stderr


def test_worker_processes_give_the_results_of_one_process(tmp_path, capsys):
    cfg = _three_method_grid(tmp_path, extra="metrics_split: in_dist")

    def outcomes(folder):
        records = [json.loads(line) for line in (folder / "outcomes.jsonl").read_text().splitlines()]
        return {r["key"]: (r["run"], r["outcome"]["splits"], r["outcome"].get("metrics")) for r in records}

    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["experiment", str(cfg), "--out", str(two), "--workers", "2", "--dry-run"]) == 0
    assert "3 methods x 2 seeds into" in (plan := capsys.readouterr().out)
    assert "2 method runs at a time in worker processes" in plan
    assert main(["experiment", str(cfg), "--out", str(one), "--no-progress", "--threads", "1"]) == 0
    capsys.readouterr()
    # An interrupted run of the grid left the base run: the workers run the four trained runs.
    two.mkdir()
    (two / "outcomes.jsonl").write_text((one / "outcomes.jsonl").read_text().splitlines()[0] + "\n")
    args = ["experiment", str(cfg), "--out", str(two), "--no-progress", "--threads", "1", "--resume"]
    assert main([*args, "--workers", "2"]) == 0
    log = capsys.readouterr().out
    assert "resuming: 1 method runs already done" in log
    assert "running 4 method runs in 2 worker processes" in log
    assert log.count("[seed 0] router_tuning:") == 1  # each run logged once, as it finishes
    assert outcomes(two) == outcomes(one)  # every item's answer and the routing metrics, exactly
    rows = [json.loads((f / "results.json").read_text())["rows"] for f in (one, two)]
    assert rows[0] == rows[1]


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGKILL"])
def test_a_stopped_grid_stops_its_workers_and_keeps_the_finished_runs(tmp_path, signame):
    """A signal to the grid's process once the first run is recorded: the run still training in the
    other worker (hours of epochs) stops too, and --resume keeps the recorded run. The workers hold the
    captured pipes, so the call returns only once they are gone. SIGTERM: the grid exits 143 with one
    line; SIGKILL: the grid dies at once, and its workers stop when they find their parent gone."""
    cfg = _three_method_grid(tmp_path)
    long_roma = "{name: roma, kind: train, overrides: {schedule.epochs: 100000}}"
    cfg.write_text(
        cfg.read_text().replace("seeds: [0, 1]", "seeds: [0]").replace("{name: roma, kind: train}", long_roma)
    )
    out = tmp_path / "out"
    grid = ["experiment", str(cfg), "--out", str(out), "--no-progress", "--threads", "1", "--workers", "2"]
    kill_at = Path(__file__).parent / "helpers" / "kill_at.py"
    cmd = [sys.executable, str(kill_at), "moe_roma.experiments.comparison:_append_outcome", "1", "after"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([*cmd, signame, "--", *grid], env=env, capture_output=True, text=True, timeout=900)
    recorded = [json.loads(line)["run"] for line in (out / "outcomes.jsonl").read_text().splitlines()]
    assert len(recorded) == 1 and recorded[0] in ("base", "router_tuning/seed0")
    assert not (out / "results.json").exists()
    if signame == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL and "Traceback" not in proc.stderr, proc.stderr
        return
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.count("\n") == 1 and "stopped by SIGTERM" in proc.stderr, proc.stderr
    assert not (out / LOCK_NAME).exists()


def test_a_worker_that_dies_stops_the_grid_with_one_sentence(tmp_path):
    from moe_roma.experiments.comparison import Comparison, PlannedRun
    from moe_roma.io.errors import RomaError
    from moe_roma.methods.roma.config import TrainConfig

    # A worker that dies as the kernel's out-of-memory killer would leave it: no exception, no exit code.
    grid = Comparison(
        None, None, [], {}, [], [0], TrainConfig(), tmp_path, workers=2, load_inputs=partial(os._exit, 9)
    )
    runs = [PlannedRun(None, 0, "none", f"key{i}", {}, f"m{i}/seed0") for i in range(2)]
    with pytest.raises(RomaError, match=r"a worker process died \(killed, or out of memory\) during m"):
        grid._run_in_workers(runs, tmp_path / "outcomes.jsonl", {})
    assert not (tmp_path / "outcomes.jsonl").exists()


def test_workers_are_refused_for_an_architecture_grid(tmp_path, capsys):
    cfg = tmp_path / "arch.yaml"
    cfg.write_text("kind: architectures\nname: a\n")
    assert main(["experiment", str(cfg), "--out", str(tmp_path / "out"), "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "--workers is for comparison grids" in err


def test_resume_reruns_a_run_whose_model_data_or_settings_changed(tmp_path, capsys):
    """``--resume`` keys each finished run on everything it used: the model (config and weights), the
    data's content and every setting. Whatever changed reruns that run, and the log names it."""
    save_tiny_model(tmp_path / "model", "olmoe", num_layers=4)
    examples = make_examples(12)
    write_data(tmp_path / "train.jsonl", examples[:8])
    write_data(tmp_path / "a.jsonl", examples[8:])
    cfg = tmp_path / "exp.yaml"
    text = f"""
name: keyed
data:
  model: {tmp_path / "model"}
  train: {tmp_path / "train.jsonl"}
  eval: {{in_dist: {tmp_path / "a.jsonl"}}}
scoring: letter
batch_size: 4
collect_layers: last2
train: {{layers: last2}}
methods: [{{name: base, kind: base}}]
"""
    cfg.write_text(text)
    out = tmp_path / "out"
    assert main(["experiment", str(cfg), "--out", str(out), "--no-progress"]) == 0

    def resume() -> str:
        (out / "results.json").unlink()  # as if stopped before the end
        capsys.readouterr()
        assert main(["experiment", str(cfg), "--out", str(out), "--no-progress", "--resume"]) == 0
        return capsys.readouterr().out

    assert "runs again" not in resume()  # nothing changed: the run is reused
    save_tiny_model(tmp_path / "model", "olmoe", num_layers=4, seed=1)  # same path and shapes, other weights
    assert "resuming: base runs again: its model changed" in resume()
    edited = make_examples(12)[8:]
    edited[0] = type(edited[0])(
        edited[0].id,
        edited[0].question,
        edited[0].choices,
        (edited[0].answer + 1) % len(edited[0].choices),
        edited[0].task,
    )  # a corrected answer
    write_data(tmp_path / "a.jsonl", edited)
    assert "resuming: base runs again: its split in_dist changed" in resume()
    cfg.write_text(text.replace("batch_size: 4", "batch_size: 2"))
    assert "resuming: base runs again: its shared settings changed" in resume()
    assert "runs again" not in resume()


def test_a_full_disk_names_the_file_and_keeps_what_was_complete(tmp_path, capsys, monkeypatch):
    """The disk fills as the second method run is recorded: one sentence naming outcomes.jsonl; the
    routing and the first run stay, and --resume finishes the grid from them."""
    import builtins
    import errno

    save_tiny_model(tmp_path / "model", "olmoe", num_layers=4)
    write_data(tmp_path / "train.jsonl", make_examples(8))
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"""
data:
  model: {tmp_path / "model"}
  train: {tmp_path / "train.jsonl"}
  eval: {{dev: {tmp_path / "train.jsonl"}}}
scoring: letter
collect_layers: last2
train: {{layers: last2, scoring: letter}}
methods: [{{name: base, kind: base}}, {{name: c3po, kind: c3po}}]
""")
    appended = []

    def full(path, mode="r", *args, **kwargs):
        if str(path).endswith("outcomes.jsonl") and "a" in mode:
            appended.append(path)
            if len(appended) == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr("moe_roma.experiments.comparison.open", full, raising=False)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["experiment", str(cfg), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and f"{out / 'outcomes.jsonl'}: could not be written (No space left on device)" in err
    )
    assert (out / "routing.json").is_file() and len((out / "outcomes.jsonl").read_text().splitlines()) == 1
    monkeypatch.undo()
    assert main(["experiment", str(cfg), "--out", str(out), "--no-progress", "--resume"]) == 0
    assert "resuming: 1 method runs already done" in capsys.readouterr().out


def test_resume_continues_an_interrupted_training_run_from_its_saved_state(tmp_path, monkeypatch):
    """With --resume, a trained method run gets ``resume=True``, so the state an interrupted grid left in
    its run folder (``runtime.save_every``) is continued rather than trained again from step 0."""
    import dataclasses

    from moe_roma.methods import registry

    seen = []
    spec = registry.METHODS["train"]

    def spy(*args, **kwargs):
        seen.append(kwargs.get("resume", False))
        return spec.run(*args, **kwargs)

    monkeypatch.setitem(registry.METHODS, "train", dataclasses.replace(spec, run=spy))
    save_tiny_model(tmp_path / "model", "olmoe", num_layers=4)
    examples = make_examples(12)
    write_data(tmp_path / "train.jsonl", examples[:8])
    write_data(tmp_path / "a.jsonl", examples[8:])
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        f"data: {{model: {tmp_path / 'model'}, train: {tmp_path / 'train.jsonl'}, "
        f"eval: {{a: {tmp_path / 'a.jsonl'}}}}}\nscoring: letter\n"
        "train: {layers: last2, scoring: letter, schedule: {epochs: 1, batch_size: 4}, "
        "runtime.save_every: 1}\n"
        "methods: [{name: rt, kind: train, overrides: {regularizer.name: none}}]\n"
    )
    assert main(["experiment", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    # As if killed before the run was recorded: no outcome, and no results of a finished grid.
    (tmp_path / "out" / "outcomes.jsonl").unlink()
    (tmp_path / "out" / "results.json").unlink()
    assert main(["experiment", str(cfg), "--out", str(tmp_path / "out"), "--no-progress", "--resume"]) == 0
    assert seen == [False, True]


def test_a_testbed_experiment_trains_on_the_split_and_size_it_names(tmp_path):
    from moe_roma.experiments.config import DataConfig
    from moe_roma.experiments.grid import load_data
    from moe_roma.io.errors import RomaError
    from moe_roma.testbed.downstream import build_train_large

    def data(**given) -> DataConfig:
        return DataConfig.from_dict({"testbed": "downstream", "splits": ["validation"], **given})

    large = build_train_large(0)
    _, train, splits = load_data(data(train_split="train_large", train_size=100))
    assert train == large[:100] and list(splits) == ["validation"]
    _, train, _ = load_data(data(train_split=["train", "train_large"], train_size=1000))
    assert [ex.id for ex in train[:960]] == [ex.id for ex in load_data(data())[1]]
    assert train[960:] == large[:40]
    for given, needle in [
        ({"train_split": "train_larg"}, "'data.train_split' must name one or more training splits"),
        ({"train_split": []}, "'data.train_split' must name"),
        ({"train_size": 961}, "'data.train_size' must be an integer from 1 to 960"),
        ({"train_split": "train_large", "train_size": 0}, "from 1 to 49000"),
    ]:
        with pytest.raises(RomaError, match=needle):
            load_data(data(**given))
    with pytest.raises(RomaError, match="'data.train_split' must name"):  # in-domain has no train_large
        DataConfig.from_dict({"testbed": "in-domain", "train_split": "train_large"})


def test_testbed_split_options_are_refused_for_files(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(
        "data: {model: m, train: t.jsonl, eval: {a: a.jsonl}, train_size: 5}\nmethods: [{name: b}]\n"
    )
    assert main(["experiment", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert (
        "'data.train_split' and 'data.train_size' choose testbed splits" in err
        and len(err.strip().splitlines()) == 1
    )


def test_the_papers_regime_is_expressible_in_an_experiment_file():
    """lr 7e-5 warmed up over 2000 steps, lambda 0.8 warmed up over 2000 steps, k 5, sigma 0.4, with the
    include_self and random-neighbour ablations: each a method override of the shared settings."""
    from moe_roma.experiments.config import ExperimentConfig

    paper_settings = {
        "optimizer.lr": 7e-5,
        "schedule.warmup_steps": 2000,
        "regularizer.lam": 0.8,
        "regularizer.lam_warmup_steps": 2000,
        "graph.k": 5,
        "graph.sigma": 0.4,
    }
    cfg = {
        "data": {"testbed": True},
        "train": {"scoring": "continuation"},
        "methods": [
            {"name": "paper", "overrides": paper_settings},
            {"name": "self", "overrides": {"graph.include_self": True}},
            {"name": "random", "overrides": {"graph.random_neighbours": True}},
        ],
    }
    paper, self_, rand = (m.config for m in ExperimentConfig.from_mapping(cfg, "exp.yaml").grid())
    assert (paper.optimizer.lr, paper.schedule.warmup_steps, paper.regularizer.lam) == (7e-5, 2000, 0.8)
    assert (paper.regularizer.lam_warmup_steps, paper.graph.k, paper.graph.sigma) == (2000, 5, 0.4)
    assert self_.graph.include_self and not self_.graph.random_neighbours
    assert rand.graph.random_neighbours and rand.graph.build(seed=3).random and not paper.graph.include_self
    # 49 000 items x 3 epochs at batch 32 (the trainer's ceil(n / batch) x epochs): 4 596 steps, the first
    # 2 000 warming up lr and lambda linearly.
    total = 4596
    assert paper.schedule.lr_factor(0, total) == 1 / 2000
    assert paper.schedule.lr_factor(999, total) == 0.5 and paper.schedule.lr_factor(1999, total) == 1.0
    assert paper.schedule.lr_factor(4595, total) == 1.0  # constant after the warm-up (the paper's)
    assert (
        paper.regularizer.lam_at(999, total) == pytest.approx(0.4)
        and paper.regularizer.lam_at(3000, total) == 0.8
    )
    # A run shorter than the warm-up ends warm-up at its last step rather than never reaching lr.
    assert paper.schedule.lr_factor(99, 100) == 1.0


def test_the_large_sweep_resumes_its_finished_runs():
    """``results/sweep-downstream-large/outcomes.jsonl`` keys its finished runs (``base``, ``roma[paper]``)
    on hashes of the shared and the method settings, and a long sweep resumes from it across sessions:
    the hashes the current code computes from the file's settings are the recorded ones."""
    from pathlib import Path

    from moe_roma.experiments.comparison import _digest, method_settings, shared_settings
    from moe_roma.experiments.config import ExperimentConfig
    from moe_roma.methods.registry import METHODS

    root = Path(__file__).resolve().parents[1]
    recorded = root / "results" / "sweep-downstream-large" / "outcomes.jsonl"
    if not recorded.is_file():
        pytest.skip(f"{recorded} is not in this checkout")
    lines = [json.loads(line) for line in recorded.read_text(encoding="utf-8").splitlines()[:2]]
    cfg = ExperimentConfig.from_yaml(root / "configs" / "sweep-downstream-large.yaml")
    methods = {m.name: m for m in cfg.grid()}
    shared = shared_settings(
        cfg.train, cfg.scoring, cfg.batch_size, cfg.collect_layers, cfg.metrics_split_used()
    )
    assert [r["run"] for r in lines] == ["base", "roma[paper]/seed0"]
    for record in lines:
        name, _, seed = record["run"].partition("/seed")
        method = methods[name]
        run_seed = None if METHODS[method.kind].seed_free else int(seed)
        assert record["inputs"]["shared settings"] == _digest(shared), name
        assert record["inputs"]["method settings"] == _digest(method_settings(method, run_seed)), name


def test_a_grid_that_stops_before_writing_leaves_no_folder(tmp_path, capsys):
    examples = make_examples(8)
    write_data(tmp_path / "train.jsonl", examples[:4])
    write_data(tmp_path / "a.jsonl", examples[4:])
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"""
name: no-model
data:
  model: {tmp_path / "missing-model"}
  train: {tmp_path / "train.jsonl"}
  eval: {{in_dist: {tmp_path / "a.jsonl"}}}
methods:
  - {{name: base, kind: base}}
""")
    out = tmp_path / "out"
    assert main(["experiment", str(cfg), "--out", str(out), "--no-progress"]) == 2
    assert "missing-model" in capsys.readouterr().err
    assert not out.exists()  # the folder taken for the lock is removed again
