"""Experiment trackers beside ``metrics.jsonl``: TensorBoard, Weights & Biases, MLflow.

``open_trackers(["tensorboard", "wandb"], out_dir, name, config)`` returns one object that takes
every ``metrics.jsonl`` record (``log``; nested fields are flattened to ``entropy/11``,
``utilisation/11/max``), the run's configuration (at start) and the final evaluation
(``log_summary``), and hands each to the libraries' own APIs:

* ``tensorboard``: ``torch.utils.tensorboard.SummaryWriter`` into ``<out>/tensorboard`` (scalars; the
  configuration as text);
* ``wandb``: ``wandb.init(dir=<out>, config=...)``, ``run.log(..., step=...)``, the final figures in
  ``run.summary``; ``WANDB_MODE=offline`` writes the run folder without a network, and
  ``WANDB_PROJECT`` names the project (default ``moe-roma``);
* ``mlflow``: ``mlflow.start_run``, ``log_params`` (the configuration, flattened), ``log_metrics``; the
  tracking URI is ``MLFLOW_TRACKING_URI`` when set, else the SQLite store ``<out>/mlflow.db`` with its
  artifacts in ``<out>/mlartifacts`` (MLflow 3 refuses the file store ``./mlruns`` unless
  ``MLFLOW_ALLOW_FILE_STORE=true``; SQLite works on MLflow 2 and 3).

They are optional (``pip install 'moe-roma[tracking]'``). ``check_trackers`` runs before any model
loads and stops, with one sentence, on a tracker that is not installed, on W&B without a login (no
``WANDB_API_KEY``, no ``~/.netrc`` entry, and not ``WANDB_MODE=offline``), and on an MLflow tracking
server that does not answer, on a local store this MLflow cannot open (a file store on MLflow 3, the
SQLite default without SQLAlchemy). Network calls are bounded: W&B's ``init`` waits at most
``WANDB_INIT_TIMEOUT`` seconds (30), MLflow's requests ``MLFLOW_HTTP_REQUEST_TIMEOUT`` seconds (10)
with ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` retries (1), unless the environment sets them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from moe_roma.io.errors import RomaError

TRACKERS = ("none", "tensorboard", "wandb", "mlflow")
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def flatten(record: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a (nested) record as ``{"a/b": value}``; None, text and non-finite values are
    left out.

    >>> flatten(
    ...     {"step": 3, "entropy": {"11": 1.5}, "manifold_loss": None, "utilisation": {"11": {"max": 0.2}}}
    ... )
    {'step': 3.0, 'entropy/11': 1.5, 'utilisation/11/max': 0.2}
    """
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}/"))
        elif (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            or isinstance(value, bool)
        ):
            out[name] = float(value)
    return out


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """A nested configuration as ``{"optimizer.lr": "0.001"}`` (MLflow parameters are strings)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if not isinstance(value, str) else value
    return out


def check_trackers(names: Iterable[str]) -> list[str]:
    """The trackers asked for (``none`` dropped), each known and importable; else one sentence."""
    import importlib.util

    chosen = []
    for name in names:
        for part in str(name).split(","):
            key = part.strip().lower()
            if not key or key == "none":
                continue
            if key not in _PACKAGES:
                raise RomaError(f"unknown tracker {part!r}; choose from {', '.join(TRACKERS)}")
            if importlib.util.find_spec(_PACKAGES[key]) is None:
                raise RomaError(
                    f"--report-to {key} needs the {_PACKAGES[key]} package, which is not installed: "
                    f"pip install 'moe-roma[tracking]' (or pip install {_PACKAGES[key]})"
                )
            if key not in chosen:
                problem = _PREFLIGHT.get(key, lambda: None)()
                if problem:
                    raise RomaError(problem)
                chosen.append(key)
    return chosen


WANDB_INIT_TIMEOUT = 30.0
MLFLOW_LIMITS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}


def _wandb_problem() -> str | None:
    """Why W&B could not log in, without any network call (None: offline, a key, or a netrc entry)."""
    import netrc
    from urllib.parse import urlparse

    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun") or os.environ.get(
        "WANDB_API_KEY"
    ):
        return None
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        entry = netrc.netrc(os.environ.get("NETRC")).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        entry = None
    if entry and entry[2]:
        return None
    return (
        f"--report-to wandb needs a W&B login and none was found (no WANDB_API_KEY, no {host} entry in "
        "~/.netrc); run `wandb login`, set WANDB_API_KEY, or set WANDB_MODE=offline to log without a network"
    )


def _mlflow_problem() -> str | None:
    """Why the MLflow tracking server cannot be used (None for a local store), asked with bounded retries."""
    for key, value in MLFLOW_LIMITS.items():
        os.environ.setdefault(key, value)
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        return _mlflow_store_problem(uri)
    import mlflow

    try:
        mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - whatever the client raises for a server it cannot use
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return f"--report-to mlflow: the tracking server {uri} (MLFLOW_TRACKING_URI) cannot be used ({first})"
    return None


MLFLOW_DB = "mlflow.db"  # the default store in a run folder: SQLite, which MLflow 2 and 3 both open
MLFLOW_ARTIFACTS = "mlartifacts"


def _mlflow_store_problem(uri: str) -> str | None:
    """Why this MLflow cannot open the local store ``uri`` ("" is roma's SQLite default), found without
    writing anything: the SQLite store needs SQLAlchemy and Alembic (``mlflow-skinny`` lacks them); a
    file store is opened in a throw-away folder, since MLflow 3 refuses one unless MLFLOW_ALLOW_FILE_STORE."""
    import importlib.util
    import tempfile
    from urllib.parse import urlparse

    import mlflow

    version = getattr(mlflow, "__version__", "?")
    scheme = urlparse(uri).scheme if "://" in uri or uri.startswith("file:") else ""
    if not uri or scheme == "sqlite":
        missing = [m for m in ("sqlalchemy", "alembic") if importlib.util.find_spec(m) is None]
        if missing:
            where = (
                f"the SQLite store {uri} (MLFLOW_TRACKING_URI)"
                if uri
                else f"its default store <out>/{MLFLOW_DB}"
            )
            return (
                f"--report-to mlflow: MLflow {version} cannot open {where} without the {missing[0]} package: "
                "pip install mlflow (not mlflow-skinny), or set MLFLOW_TRACKING_URI to a tracking server"
            )
        return None
    if scheme not in ("", "file"):
        return None  # a database or a hosted store: MLflow opens it when the run starts
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        try:
            MlflowClient(tracking_uri=(Path(tmp) / "mlruns").as_uri()).search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 - whatever this MLflow raises for a file store
            first = (str(exc).strip().split(". ") or [type(exc).__name__])[0][:200].rstrip(".")
            return (
                f"--report-to mlflow: MLflow {version} refuses the file store {uri} (MLFLOW_TRACKING_URI): "
                f"{first}; unset MLFLOW_TRACKING_URI for roma's default <out>/{MLFLOW_DB}, set it to "
                "sqlite:///PATH/mlflow.db, or set MLFLOW_ALLOW_FILE_STORE=true"
            )
    return None


def _staged(out: Path) -> bool:
    from moe_roma.io.outputs import landing_path

    return landing_path(out.resolve()) != out.resolve()


def _mlflow_default_experiment(mlflow, out: Path) -> str:
    """Point MLflow at ``<out>/mlflow.db`` and return the id of the experiment (``MLFLOW_EXPERIMENT_NAME``,
    else ``moe-roma``) whose artifacts go to ``<out>/mlartifacts``, not to ``./mlruns`` of the working
    folder."""
    from moe_roma.io.outputs import landing_path

    out = out.resolve()
    mlflow.set_tracking_uri(f"sqlite:///{out / MLFLOW_DB}")
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "moe-roma"
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # The store records its artifact folder by path: where the run folder lands (an --overwrite trains
    # in a staging folder that is renamed when complete).
    return mlflow.create_experiment(name, artifact_location=(landing_path(out) / MLFLOW_ARTIFACTS).as_uri())


_PREFLIGHT = {"wandb": _wandb_problem, "mlflow": _mlflow_problem}


class _TensorBoard:
    def __init__(self, out: Path, name: str, config: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(out / "tensorboard"))
        self.writer.add_text(
            "config", "```\n" + json.dumps(config, indent=2, sort_keys=True, default=str) + "\n```"
        )

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def summary(self, values: dict[str, float], step: int) -> None:
        self.log(values, step)

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, out: Path, name: str, config: dict) -> None:
        import wandb

        timeout = float(os.environ.get("WANDB_INIT_TIMEOUT", WANDB_INIT_TIMEOUT))
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "moe-roma"),
            name=name,
            dir=str(out),
            config=config,
            reinit="create_new",
            settings=wandb.Settings(
                init_timeout=timeout
            ),  # a server that does not answer is not waited on forever
        )

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def summary(self, values: dict[str, float], step: int) -> None:
        self.run.summary.update(values)

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    def __init__(self, out: Path, name: str, config: dict) -> None:
        import mlflow

        self.mlflow = mlflow
        experiment = None
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            experiment = _mlflow_default_experiment(mlflow, out)
        self.run = mlflow.start_run(run_name=name, experiment_id=experiment)
        # MLflow limits a parameter's value to a few hundred characters; the full config is an artifact too.
        mlflow.log_params({k: v[:500] for k, v in flat_params(config).items()})
        if experiment is not None and _staged(out):
            # An --overwrite trains in a staging folder: the store records the folder where the run lands,
            # which still holds the old run, so nothing is written there; the config goes into a tag.
            mlflow.set_tag("config", json.dumps(config, sort_keys=True, default=str)[:5000])
        else:
            mlflow.log_dict(config, "config.json")

    def log(self, values: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics({k.replace("/", "."): v for k, v in values.items()}, step=step)

    def summary(self, values: dict[str, float], step: int) -> None:
        self.log(values, step)

    def close(self) -> None:
        self.mlflow.end_run()


_CLASSES = {"tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow}


class Trackers:
    """Every chosen tracker behind one ``log`` / ``log_summary`` / ``close``; a context manager."""

    def __init__(self, backends: Sequence[Any]) -> None:
        self.backends = list(backends)
        self.last_step = 0

    def __bool__(self) -> bool:
        return bool(self.backends)

    def log(self, record: dict) -> None:
        step = int(record.get("step", self.last_step))
        self.last_step = step
        values = flatten({k: v for k, v in record.items() if k != "step"})
        for b in self.backends:
            b.log(values, step)

    def log_summary(self, values: dict, prefix: str = "final/") -> None:
        flat = {f"{prefix}{k}": v for k, v in flatten(values).items()}
        for b in self.backends:
            b.summary(flat, self.last_step)

    def close(self) -> None:
        for b in self.backends:
            b.close()
        self.backends = []

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_trackers(names: Iterable[str], out_dir: str | Path, name: str, config: dict) -> Trackers:
    """The trackers ``names`` (``check_trackers``) writing under ``out_dir``, the run called ``name``."""
    chosen = check_trackers(names)
    out = Path(out_dir)
    if chosen:
        out.mkdir(parents=True, exist_ok=True)
    backends = []
    try:
        for key in chosen:
            backends.append(_CLASSES[key](out, name, config))
    except BaseException:
        for b in backends:
            b.close()
        raise
    return Trackers(backends)
