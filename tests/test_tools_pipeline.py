"""The tools a user already has, end to end on a tiny model: data from a parquet file in a hub schema,
`roma train --report-to tensorboard wandb` (read back with TensorBoard's own reader and from the W&B
offline run folder), the model card of the router folder and of `roma export --eval-json`, checked
with huggingface_hub's own parser."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset, Features, Sequence, Value
from huggingface_hub import ModelCard

from helpers.tiny_models import save_tiny_model
from helpers.wandb_run import run_contents
from moe_roma.cli import main
from moe_roma.models.card import build_model_card
from moe_roma.training.trackers import check_trackers

WORDS = ["one", "two", "three", "four", "five", "six", "red", "blue", "green", "cat", "dog", "bird"]


def write_mmlu_parquet(path, n: int, subject: str):
    """``n`` rows in cais/mmlu's schema (question, subject, choices, answer) over the tiny model's words."""
    rows = [
        {
            "question": f"what is {WORDS[i % 12]} and {WORDS[(i * 5) % 12]} ?",
            "subject": subject,
            "choices": [WORDS[(i + j) % 12] for j in range(4)],
            "answer": i % 4,
        }
        for i in range(n)
    ]
    features = Features(
        {
            "question": Value("string"),
            "subject": Value("string"),
            "choices": Sequence(Value("string")),
            "answer": Value("int64"),
        }
    )
    Dataset.from_list(rows, features=features).to_parquet(str(path))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    w = tmp_path_factory.mktemp("tools")
    save_tiny_model(w / "model", "olmoe", num_layers=4)
    write_mmlu_parquet(w / "train.parquet", 16, "animals")
    write_mmlu_parquet(w / "test.parquet", 8, "colours")
    assert (
        main(
            [
                "collect",
                "--model",
                str(w / "model"),
                "--data",
                str(w / "train.parquet"),
                "--out",
                str(w / "routing.json"),
                "--layers",
                "last2",
                "--no-progress",
            ]
        )
        == 0
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    mp.setenv("WANDB_PROJECT", "roma-test")
    try:
        assert (
            main(
                [
                    "train",
                    "--model",
                    str(w / "model"),
                    "--routing",
                    str(w / "routing.json"),
                    "--out",
                    str(w / "roma"),
                    "--schedule.epochs",
                    "2",
                    "--schedule.batch-size",
                    "8",
                    "--optimizer.lr",
                    "0.01",
                    "--layers",
                    "last2",
                    "--no-progress",
                    "--report-to",
                    "tensorboard",
                    "--report-to",
                    "wandb",
                    "graph.dedupe_threshold=1.01",
                ]
            )
            == 0
        )
    finally:
        mp.undo()
    return w


def metrics(w) -> list[dict]:
    return [json.loads(line) for line in (w / "roma" / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_event_file_holds_every_metrics_field(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    records = metrics(trained)
    acc = EventAccumulator(str(trained / "roma" / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for key, value in records[-1].items():
        if isinstance(value, dict):
            assert any(t.startswith(f"{key}/") for t in tags), key
        elif isinstance(value, (int, float)) and key != "step":
            assert key in tags, key
    task = acc.Scalars("task_loss")
    assert [e.step for e in task] == [r["step"] for r in records]
    assert task[-1].value == pytest.approx(records[-1]["task_loss"], rel=1e-6)
    assert "final/task_loss" in tags and "final/train_seconds" in tags
    assert acc.Tags()["tensors"] == ["config/text_summary"]  # the configuration, as text
    assert '"lr": 0.01' in acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()


def test_wandb_offline_run_folder_holds_config_metrics_and_summary(trained):
    files = sorted((trained / "roma" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    run = run_contents(files[0])
    assert "config" in run["config"], sorted(run["config"])  # what the file held, if W&B left it out
    assert run["config"]["config"]["optimizer"]["lr"] == 0.01 and run["config"]["routing"].endswith(
        "routing.json"
    )
    records = metrics(trained)
    assert [h["_step"] for h in run["history"]] == [r["step"] for r in records]
    for key, value in records[-1].items():
        if isinstance(value, (int, float)) and key != "step":
            assert run["history"][-1][key] == pytest.approx(value), key
    assert run["history"][-1]["entropy/2"] == pytest.approx(records[-1]["entropy"]["2"])
    assert run["summary"]["final/steps"] == records[-1]["step"] and "final/train_seconds" in run["summary"]


def test_a_tracker_that_is_not_installed_is_named_with_what_to_install(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    with pytest.raises(
        Exception, match=r"--report-to mlflow needs the mlflow package.*pip install 'moe-roma\[tracking\]'"
    ):
        check_trackers(["mlflow"])
    monkeypatch.setenv(
        "WANDB_MODE", "offline"
    )  # W&B without a login is checked too (tests/test_bad_input_matrix.py)
    assert check_trackers(["none"]) == [] and check_trackers(["tensorboard,wandb"]) == [
        "tensorboard",
        "wandb",
    ]
    assert main(["train", "--model", "x", "--routing", "y", "--out", "z", "--report-to", "mlflow"]) == 2
    assert "pip install 'moe-roma[tracking]'" in capsys.readouterr().err


def test_router_folder_and_export_carry_a_valid_model_card(trained, capsys):
    w = trained
    card = ModelCard.load(w / "roma" / "README.md")
    assert card.data.library_name == "moe-roma" and "moe-roma" in card.data.tags
    for section in (
        "## Training configuration",
        "- seed: 0",
        "## Expected generalisation behaviour",
        "## Failure modes",
        "## Intended domains",
        "- animals (16 examples)",
    ):
        assert section in card.text, section
    assert (
        main(
            [
                "eval",
                "--model",
                str(w / "model"),
                "--routers",
                str(w / "roma"),
                "--data",
                str(w / "test.parquet"),
                "--compare-base",
                "--json",
                str(w / "eval.json"),
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads((w / "eval.json").read_text())
    assert report["data_format"] == "datasets[mmlu]"
    capsys.readouterr()
    assert (
        main(
            [
                "export",
                "--model",
                str(w / "model"),
                "--routers",
                str(w / "roma"),
                "--out",
                str(w / "merged"),
                "--eval-json",
                str(w / "eval.json"),
            ]
        )
        == 0
    )
    card = ModelCard.load(
        w / "merged" / "README.md"
    )  # huggingface_hub parses the front matter and model-index
    assert card.data.library_name == "transformers"
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert results["acc"] == pytest.approx(report["acc"], abs=1e-4) and "acc_norm" in results
    assert card.data.eval_results[0].dataset_type == "test"
    assert "| test.parquet | continuation | 8 |" in card.text


def test_card_front_matter_for_a_hub_base_model():
    config = {
        "base_model": {"name_or_path": "allenai/OLMoE-1B-7B-0125-Instruct"},
        "method": "roma",
        "seed": 3,
        "tuned_layers": [11, 12, 13, 14, 15],
        "num_experts": 64,
        "family": "olmoe",
        "train_data": "hf:allenai/sciq:train",
        "train_tasks": {"sciq": 10},
        "hyperparameters": {"lr": 7e-5},
    }
    report = {
        "data": "hf:allenai/ai2_arc:ARC-Challenge:test",
        "scoring": "continuation",
        "n": 1172,
        "acc": 0.5,
        "acc_norm": 0.52,
        "tasks": {"arc": {"acc": 0.5}},
        "base": {"acc": 0.55, "tasks": {"arc": {"acc": 0.55}}},
    }
    card = ModelCard(
        str(build_model_card(config, [report], ["routing entropy in layer 15 fell to 0.01 nats"]))
    )
    assert card.data.base_model == "allenai/OLMoE-1B-7B-0125-Instruct" and card.data.datasets == [
        "allenai/sciq"
    ]
    r = card.data.eval_results[0]
    assert (r.dataset_type, r.dataset_config, r.dataset_split, r.metric_value) == (
        "allenai/ai2_arc",
        "ARC-Challenge",
        "test",
        0.5,
    )
    assert "accuracy fell on allenai/ai2_arc:ARC-Challenge:test: 55.0% -> 50.0%" in card.text
    assert "routing collapse during training: routing entropy in layer 15" in card.text
    assert "- seed: 3" in card.text


def test_docstring_examples():
    import doctest

    from moe_roma.manifold import health
    from moe_roma.training import monitor, trackers

    for module in (trackers, monitor, health):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_mlflow_backend_calls(tmp_path, monkeypatch):
    """MLflow itself is not in the test environment (it would downgrade pinned packages); a stand-in module
    records what the backend asks of mlflow's API: a run in the SQLite store <out>/mlflow.db (MLflow 3
    refuses the old default, the file store <out>/mlruns) under an experiment whose artifacts go to
    <out>/mlartifacts, flat string parameters cut to MLflow's length limit, the config as an artifact,
    metrics per step with '/' made '.'."""
    import sys
    import types

    from moe_roma.training.trackers import open_trackers

    calls = []
    fake = types.ModuleType("mlflow")
    for name in ("set_tracking_uri", "start_run", "log_params", "log_dict", "log_metrics", "end_run"):
        setattr(fake, name, lambda *a, _n=name, **k: calls.append((_n, a, k)))
    fake.get_experiment_by_name = lambda name: calls.append(("get_experiment_by_name", (name,), {}))
    fake.create_experiment = lambda *a, **k: calls.append(("create_experiment", a, k)) or "7"
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())
    with open_trackers(["mlflow"], tmp_path, "run1", {"optimizer": {"lr": 0.01}, "note": "x" * 600}) as t:
        t.log({"step": 2, "task_loss": 0.5, "entropy": {"3": 1.0}, "manifold_loss": None})
        t.log_summary({"task_loss": 0.4})
    names = [c[0] for c in calls]
    assert names == [
        "set_tracking_uri",
        "get_experiment_by_name",
        "create_experiment",
        "start_run",
        "log_params",
        "log_dict",
        "log_metrics",
        "log_metrics",
        "end_run",
    ]
    assert calls[0][1][0] == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    assert calls[2][1] == ("moe-roma",)
    assert calls[2][2] == {"artifact_location": (tmp_path / "mlartifacts").resolve().as_uri()}
    assert calls[3][2] == {"run_name": "run1", "experiment_id": "7"}
    params = calls[4][1][0]
    assert params["optimizer.lr"] == "0.01" and len(params["note"]) == 500
    assert calls[6][1][0] == {"task_loss": 0.5, "entropy.3": 1.0} and calls[6][2] == {"step": 2}
    assert calls[7][1][0] == {"final.task_loss": 0.4}


def test_mlflow_in_a_staging_folder_records_where_the_run_lands(tmp_path, monkeypatch):
    """`roma train --overwrite` trains in <parent>/.<name>.roma-new-XXXX and renames it when complete: the
    store records the artifact folder where the run lands, and writes nothing there (it still holds the
    old run): the config goes into a tag instead of an artifact."""
    import sys
    import types

    from moe_roma.io.outputs import landing_path
    from moe_roma.training.trackers import open_trackers

    staging = tmp_path / ".run.roma-new-abc123"
    assert landing_path(staging) == tmp_path / "run" and landing_path(tmp_path / "run") == tmp_path / "run"
    calls = []
    fake = types.ModuleType("mlflow")
    for name in (
        "set_tracking_uri",
        "start_run",
        "log_params",
        "log_dict",
        "set_tag",
        "log_metrics",
        "end_run",
    ):
        setattr(fake, name, lambda *a, _n=name, **k: calls.append((_n, a, k)))
    fake.get_experiment_by_name = lambda name: None
    fake.create_experiment = lambda *a, **k: calls.append(("create_experiment", a, k)) or "1"
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())
    with open_trackers(["mlflow"], staging, "run", {"lr": 0.01}):
        pass
    named = {c[0]: c for c in calls}
    assert named["set_tracking_uri"][1][0] == f"sqlite:///{staging.resolve() / 'mlflow.db'}"
    assert named["create_experiment"][2]["artifact_location"] == (tmp_path / "run" / "mlartifacts").as_uri()
    assert "log_dict" not in named and named["set_tag"][1] == ("config", '{"lr": 0.01}')


def fake_mlflow(monkeypatch, version: str, refuses_file_store: bool) -> list:
    """A stand-in ``mlflow`` whose client refuses a file store as MLflow 3 does (unless allowed); the
    URIs its client was asked to open are returned."""
    import sys
    import types

    opened: list = []

    class Client:
        def __init__(self, tracking_uri):
            opened.append(tracking_uri)
            if tracking_uri.startswith("file:") and refuses_file_store:
                raise RuntimeError(
                    "The filesystem tracking backend (e.g., './mlruns') is in maintenance mode and will "
                    "not receive further updates. Please migrate to a database backend (e.g., "
                    "'sqlite:///mlflow.db')."
                )

        def search_experiments(self, max_results):
            return []

    fake = types.ModuleType("mlflow")
    fake.__version__ = version
    fake.MlflowClient = Client
    tracking = types.ModuleType("mlflow.tracking")
    tracking.MlflowClient = Client
    fake.tracking = tracking
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", tracking)
    return opened


def test_mlflow_local_stores_are_checked_before_any_work(tmp_path, monkeypatch):
    """The default store is SQLite (MLflow 2 and 3 open it; it needs SQLAlchemy and Alembic, which
    mlflow-skinny lacks); a file store is tried in a throw-away folder, so MLflow 3's refusal is one
    sentence before the model loads, naming the way out; nothing is written where the URI points."""
    import importlib.util

    from moe_roma.io.errors import RomaError

    real = importlib.util.find_spec
    faked = {"mlflow", "sqlalchemy", "alembic"}
    have = set(faked)
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (object() if name in have else None) if name in faked else real(name, *a),
    )
    opened = fake_mlflow(monkeypatch, "3.17.2", refuses_file_store=True)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert check_trackers(["mlflow"]) == ["mlflow"] and opened == []  # the default: nothing opened yet
    for uri in ("./mlruns", (tmp_path / "store").as_uri(), str(tmp_path / "store")):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        with pytest.raises(RomaError) as err:
            check_trackers(["mlflow"])
        said = str(err.value)
        assert "\n" not in said and f"MLflow 3.17.2 refuses the file store {uri}" in said
        assert "maintenance mode" in said and "MLFLOW_ALLOW_FILE_STORE=true" in said
        assert "sqlite:///" in said and not (tmp_path / "store").exists()
    assert all(u.startswith("file:") and "mlruns" in u for u in opened)  # each time a throw-away folder
    fake_mlflow(monkeypatch, "2.22.0", refuses_file_store=False)  # MLflow 2 (or MLFLOW_ALLOW_FILE_STORE)
    assert check_trackers(["mlflow"]) == ["mlflow"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    assert check_trackers(["mlflow"]) == ["mlflow"] and not (tmp_path / "m.db").exists()
    have.discard("sqlalchemy")  # mlflow-skinny
    for uri in ("", f"sqlite:///{tmp_path / 'm.db'}"):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        with pytest.raises(RomaError, match="without the sqlalchemy package: pip install mlflow"):
            check_trackers(["mlflow"])


def test_mlflow_default_store_with_the_real_mlflow(tmp_path, monkeypatch):
    """With MLflow installed (2 or 3; not in the locked test environment): a run logged into the
    default store is read back from <out>/mlflow.db, and nothing is written outside <out>."""
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    from mlflow.tracking import MlflowClient

    from moe_roma.training.trackers import open_trackers

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert check_trackers(["mlflow"]) == ["mlflow"]
    with open_trackers(["mlflow"], out, "run1", {"optimizer": {"lr": 0.01}}) as t:
        t.log({"step": 2, "task_loss": 0.5})
        t.log_summary({"task_loss": 0.4})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert {"mlflow.db", "mlartifacts"} <= {p.name for p in out.iterdir()}
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("moe-roma")
    assert experiment.artifact_location == (out / "mlartifacts").resolve().as_uri()
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.metrics == {"task_loss": 0.5, "final.task_loss": 0.4}
    assert run.data.params == {"optimizer.lr": "0.01"} and run.info.run_name == "run1"
    from moe_roma.io.errors import RomaError

    for uri in ("./mlruns", "http://127.0.0.1:9"):  # MLflow 3's file store; a port nobody listens on
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
        major = int(__import__("mlflow").__version__.split(".")[0])
        if uri == "./mlruns" and major < 3:
            continue
        with pytest.raises(RomaError, match=f"--report-to mlflow: .*{uri}"):
            check_trackers(["mlflow"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
