"""``roma experiment CONFIG.yaml``: a grid of methods, settings and seeds, one tidy results file.

One assembly: ``plan(cfg)`` says what ``run(cfg)`` would do after checking everything that can be
checked without a model; ``run(cfg)`` loads the data and the model and runs the comparison;
``write_results`` writes ``results.json`` (rows as in the demo's, plus ``setting``), ``table.md``
(mean ± std over seeds, metrics beyond accuracy) and plots. ``roma demo`` is ``run`` on
``configs/demo.yaml`` with its own report. The file is read once (``read_experiment``) into an
``ExperimentConfig`` (``experiments/config.py``), or a pre-training grid (``kind: architectures``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moe_roma import __version__
from moe_roma.experiments.comparison import Comparison
from moe_roma.experiments.config import DataConfig, ExperimentConfig, Method
from moe_roma.io.atomic import write_json_atomic, write_text_atomic
from moe_roma.io.errors import RomaError
from moe_roma.io.lock import FolderLock
from moe_roma.io.outputs import safe_name
from moe_roma.io.yamlfile import load_yaml_mapping
from moe_roma.methods.registry import METHODS
from moe_roma.report.experiments import experiment_report, plot_accuracy
from moe_roma.report.tables import aggregate, markdown_table
from moe_roma.scoring.stats import compare_paired, mean_interval
from moe_roma.training.trackers import check_trackers


@dataclass
class ArchitectureGrid:
    """A ``kind: architectures`` file: the pre-training study's grid (``experiments/pretraining_study``)."""

    mapping: dict
    path: Path

    @property
    def name(self) -> str:
        return safe_name(self.mapping.get("name", self.path.stem), str(self.path), "'name'")


def read_experiment(path: str | Path) -> ExperimentConfig | ArchitectureGrid:
    """The experiment file at ``path``, read once and checked whole."""
    mapping = load_yaml_mapping(
        path, "experiment configuration", "a mapping with 'methods', 'seeds' and 'data'"
    )
    if mapping.get("kind") == "architectures":
        return ArchitectureGrid(mapping, Path(path))
    return ExperimentConfig.from_mapping(mapping, path)


def output_folder(cfg: ExperimentConfig | ArchitectureGrid, out_dir: str | Path | None = None) -> Path:
    """``out_dir``, else ``runs/<name>`` (a plain name that stays in ``runs``)."""
    return Path(out_dir) if out_dir is not None else Path("runs") / cfg.name  # type: ignore[operator]


def recorded_source(cfg: ExperimentConfig) -> Any:
    """The experiment file's content as ``results.json`` records it (``config.experiment``)."""
    return getattr(cfg, "source", None) or cfg.to_dict()


def adds_to_finished_grid(cfg: ExperimentConfig | ArchitectureGrid, out: Path) -> bool:
    """Whether ``out`` holds a finished grid run from another experiment file than ``cfg`` (more
    methods or seeds, say): ``--resume`` then keeps its finished runs and adds the rest. A results file
    that cannot be read is left to the output guard, which refuses the folder as finished."""
    if isinstance(cfg, ArchitectureGrid):
        return False
    try:
        recorded = json.loads((out / "results.json").read_text(encoding="utf-8"))["config"]["experiment"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return recorded != json.loads(json.dumps(recorded_source(cfg), default=str))


def hold_out_validation(examples: list, fraction: float) -> tuple[list, list]:
    """(train, validation): every ``round(1/fraction)``-th example is held out, so that every task
    and template keeps its share in both parts; deterministic, and the same for every seed."""
    step = max(2, round(1 / fraction))
    train = [ex for i, ex in enumerate(examples) if i % step != step - 1]
    validation = [ex for i, ex in enumerate(examples) if i % step == step - 1]
    return train, validation


def load_data(data: DataConfig, limit: int | None = None) -> tuple[Any, list, dict[str, list]]:
    """(model path, training examples, evaluation splits) of the ``data`` section.

    With ``validation: f``, a share f of the training examples is held out as the split
    ``validation`` (for choosing hyper-parameters without looking at the test splits).
    """

    def cut(examples: list) -> list:
        return examples[:limit] if limit else examples

    names = data.eval_names()
    if data.testbed is not None:
        from moe_roma.testbed import load_testbed_splits, testbed_model_path

        suite = load_testbed_splits(data.suite_seed, include_pretrain=False, testbed=data.testbed)
        model, train = testbed_model_path(data.testbed), testbed_training_set(data, suite)
        # A testbed that ships its own validation split uses it, unless the file asks to hold out a share.
        own_validation = "validation" in suite and not data.validation
        splits = {s: cut(suite[s]) for s in names if s != "validation" or own_validation}
    else:
        model = data.model
        train = [ex for entry in data.train or [] for ex in load_source(entry, data.format)]
        splits = {name: cut(load_source(entry, data.format)) for name, entry in (data.eval or {}).items()}
    if data.validation:
        train, validation = hold_out_validation(train, data.validation)
        splits = {"validation": cut(validation), **splits}
        if "validation" in names:  # keep the order the configuration asked for
            splits = {s: splits[s] for s in names if s in splits} | splits
    return model, train, splits


def testbed_training_set(data: DataConfig, suite: dict) -> list:
    """The testbed items to train on: the ``train_split`` splits in order, cut to their first ``train_size``
    (``train_large`` is in a seeded order, so any prefix is a nested subset with the full split's family
    mix)."""
    examples: list = []
    for split in data.training_splits():
        if split == "train_large":
            from moe_roma.testbed.downstream import build_train_large

            examples += build_train_large(data.suite_seed)
        else:
            examples += suite[split]
    size = data.train_size
    if size is not None:
        if not 1 <= size <= len(examples):
            chosen = (
                data.train_split[0] if data.train_split and len(data.train_split) == 1 else data.train_split
            )
            raise RomaError(
                f"'data.train_size' must be an integer from 1 to {len(examples)} (the size of "
                f"{chosen or 'train'}), got {size!r}"
            )
        examples = examples[:size]
    return examples


def load_source(entry: dict, fmt: str | None = None) -> list:
    """The examples of one checked source (its first ``limit`` of them)."""
    from moe_roma.data.loaders import load_examples
    from moe_roma.data.presets import FieldMap

    fields = entry.get("fields")
    examples = load_examples(
        entry["source"],
        format=fmt,
        task=entry.get("task"),
        preset=entry.get("preset"),
        fields=FieldMap(**fields) if fields else None,
    )
    return examples[: entry["limit"]] if entry.get("limit") else examples


# --- plan ------------------------------------------------------------------------------------------------


def plan(
    cfg: ExperimentConfig | ArchitectureGrid,
    out_dir: str | Path | None = None,
    report_to: list[str] | None = None,
    trust_remote_code: bool = False,
    workers: int = 1,
) -> list[str]:
    """What ``run`` would do, step by step, after checking everything that can be checked without
    loading a model or reading data: every setting and method (done when the file was read), every
    data source names a known preset, every local file exists."""
    out = output_folder(cfg, out_dir)
    if isinstance(cfg, ArchitectureGrid):
        return _plan_architectures(cfg, out)
    trackers = check_trackers(report_to or [])
    methods, data, runtime = cfg.grid(), cfg.data, cfg.train.runtime
    steps = [f"experiment {cfg.name!r}: {len(methods)} methods x {len(cfg.seeds)} seeds into {out}"]
    if workers > 1:
        steps[0] += f", {workers} method runs at a time in worker processes"
    if data.testbed is not None:
        trained = " + ".join(data.training_splits())
        size = f", its first {data.train_size} items" if data.train_size else ""
        steps.append(
            f"1. load the bundled {data.testbed} testbed model and its splits; train on {trained}{size}"
        )
    else:
        steps.append(
            f"1. load the model {data.model} (dtype {runtime.dtype}, device "
            f"{runtime.device or 'first GPU, else CPU'})"
        )
        entries, evals = data.train or [], data.eval or {}
        for entry in [*entries, *evals.values()]:
            _check_local(entry, cfg.where())
        _check_model(data.model, cfg.where(), trust_remote_code)
        steps.append(f"2. read {len(entries)} training sources:")
        steps += [f"   - {_describe(e)}" for e in entries]
        steps.append(f"3. read {len(evals)} evaluation splits:")
        steps += [f"   - {name}: {_describe(e)}" for name, e in evals.items()]
    if data.validation:
        steps.append(f"   hold out {data.validation} of the training examples as the split 'validation'")
    steps.append(
        f"4. collect the base model's routing of the training examples (layers {cfg.collect_layers}, "
        f"scoring {cfg.scoring}) into {out / 'routing.json'}"
    )
    n = 5
    evals_named = ", ".join(data.eval_names())
    for seed in cfg.seeds:
        for m in methods:
            steps.append(f"{n}. seed {seed}, {m.name} ({m.kind}): {_plan_run(m, seed, out)} on {evals_named}")
            n += 1
    if trackers:
        steps.append(f"   each method run is tracked in {', '.join(trackers)}")
    steps.append(f"{n}. write {out / 'results.json'}, {out / 'table.md'} and {out / 'accuracy.png'}")
    return steps


def _plan_run(m: Method, seed: int, out: Path) -> str:
    """What one method run does, in the plan's words: the settings a trained method's result hangs on."""
    if METHODS[m.kind].kind == "weights":
        c = m.config
        return (
            f"train routers ({c.layers}, lr {c.optimizer.lr}, regulariser {c.regularizer.name}, "
            f"lambda {c.regularizer.lam}, k {c.graph.k}) into "
            f"{out / 'runs' / m.name / f'seed{seed}'}, then evaluate"
        )
    if METHODS[m.kind].kind == "test_time":
        return "score every split with test-time routing"
    return "evaluate the model as it is"


def _plan_architectures(grid: ArchitectureGrid, out: Path) -> list[str]:
    from moe_roma.experiments.pretraining_study import plan_jobs

    jobs, splits = plan_jobs(grid.mapping, str(grid.path), out)
    steps = [
        f"experiment {grid.mapping.get('name', grid.path.stem)!r} (kind: architectures): {len(jobs)} "
        f"downstream testbed builds, {grid.mapping.get('workers', 1)} at a time, into {out}"
    ]
    for n, j in enumerate(jobs, 1):
        c = j.config
        steps.append(
            f"{n}. {j.key}: build --arch {j.arch} --steps {c['steps']} --batch-size {c['batch_size']} "
            f"--align {c['align']} (lambda {c['align_lambda']}, {c['align_schedule']}), then score "
            f"{', '.join(splits)}"
        )
    steps.append(
        f"{len(jobs) + 1}. write {out / 'results.json'}, {out / 'table.md'} and {out / 'accuracy.png'}"
    )
    return steps


def _check_model(model: object, where: str, trust_remote_code: bool) -> None:
    """A local model folder that exists and needs no code of its own (a hub id is checked when it loads)."""
    from moe_roma.models.loading import check_no_remote_code

    text = str(model)
    if text.startswith((".", "/", "~")) and not Path(text).expanduser().exists():
        raise RomaError(f"{where}data.model {text} does not exist")
    check_no_remote_code(text, trust_remote_code)


def _check_local(entry: dict, where: str) -> None:
    spec = entry["source"]
    if not spec.startswith("hf:") and not Path(spec).exists():
        raise RomaError(f"{where}data source {spec} does not exist")


def _describe(entry: dict) -> str:
    how = (
        f"preset {entry['preset']}"
        if entry.get("preset")
        else "fields " + ", ".join(f"{k}={v}" for k, v in entry["fields"].items())
        if entry.get("fields")
        else "preset detected from its columns"
    )
    limit = f", first {entry['limit']} examples" if entry.get("limit") else ""
    return f"{entry['source']} ({how}{limit})"


# --- run ---------------------------------------------------------------------------------------------------


@dataclass
class GridRun:
    """What ``run`` leaves for a report: the rows and run metadata, the comparison (its per-run
    details, routing store and model), the data, and when it started."""

    cfg: ExperimentConfig
    out: Path
    rows: list[dict]
    meta: dict
    comparison: Comparison
    train_examples: list
    splits: dict[str, list]
    start: float


def run(
    cfg: ExperimentConfig,
    out_dir: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    resume: bool = False,
    report_to: list[str] | None = None,
    trust_remote_code: bool = False,
    workers: int = 1,
) -> GridRun:
    """Run the grid into ``out_dir``: load the data and the model, collect the base routing, run
    every method and seed. ``resume`` reuses the method runs an interrupted run of the same grid
    into the same folder finished (``outcomes.jsonl``); ``report_to`` names experiment trackers (one
    tracked run per method and seed); ``trust_remote_code`` lets the model folder run its own code;
    ``workers`` method runs go at once, each in its own process with this one's torch threads."""
    start = time.perf_counter()
    out = output_folder(cfg, out_dir)
    trackers = check_trackers(report_to or [])  # a tracker that is not installed stops before any work
    methods = cfg.grid()
    model, tok, train_examples, splits = load_inputs(cfg, trust_remote_code)
    log(
        f"experiment {cfg.name}: {len(methods)} methods x {len(cfg.seeds)} seeds on "
        + ", ".join(f"{k} ({len(v)})" for k, v in splits.items())
    )
    comparison = Comparison(
        model,
        tok,
        train_examples,
        splits,
        methods,
        list(cfg.seeds),
        cfg.train,
        out,
        scoring=cfg.scoring,
        # Every MoE layer is recorded by default, so that layer ablations find their routing in the one store.
        collect_layers=cfg.collect_layers,
        batch_size=cfg.batch_size,
        progress=progress,
        log=log,
        metrics_split=cfg.metrics_split_used(),
        resume=resume,
        report_to=trackers,
        workers=workers,
        load_inputs=functools.partial(load_inputs, cfg, trust_remote_code),
    )
    rows, meta = comparison.run()
    return GridRun(cfg, out, rows, meta, comparison, train_examples, splits, start)


def load_inputs(
    cfg: ExperimentConfig, trust_remote_code: bool = False
) -> tuple[Any, Any, list, dict[str, list]]:
    """(model, tokenizer, training examples, evaluation splits) of a grid; a worker process of
    ``--workers`` builds its own with this same function."""
    import torch

    from moe_roma.models.loading import load_model

    runtime = cfg.train.runtime
    model_path = _testbed_model(cfg.data.testbed) if cfg.data.testbed is not None else cfg.data.model
    torch.manual_seed(0)
    _, train_examples, splits = load_data(cfg.data, cfg.limit)
    model, tok = load_model(
        model_path,
        dtype=runtime.dtype,
        # The bundled testbeds are CPU-built and their recorded figures are CPU figures.
        device=runtime.device or ("cpu" if cfg.data.testbed is not None else None),
        attn_implementation=runtime.attn_implementation,
        trust_remote_code=trust_remote_code,
    )
    return model, tok, train_examples, splits


def _testbed_model(name: str) -> Path:
    from moe_roma.testbed import testbed_model_path

    path = testbed_model_path(name)
    if not (path / "config.json").is_file():
        raise RomaError(f"{path}: the bundled testbed model is missing; build it with `roma testbed build`")
    return path


def write_results(done: GridRun, log: Callable[[str], None] = print) -> dict:
    """``results.json``, ``table.md`` and ``accuracy.png`` of a finished grid; returns the results."""
    cfg, out, rows, comparison = done.cfg, done.out, done.rows, done.comparison
    names, split_names = [m.name for m in cfg.grid()], list(done.splits)
    metrics = {key: outcome["metrics"] for key, outcome in comparison.details.items() if "metrics" in outcome}
    paired = paired_tests(comparison.details, cfg.paired, names, split_names, list(cfg.seeds), cfg.where())
    seconds = time.perf_counter() - done.start
    source = recorded_source(cfg)
    results = {
        "rows": rows,
        "config": {**done.meta, "experiment": source},
        "metrics": metrics,
        "ctgi": cross_task_generalisation(rows, split_names),
        "tasks": per_task_accuracy(comparison.details, names, split_names),
        "paired": paired,
        "intervals": seed_intervals(rows),
        "package_version": __version__,
        "seconds": round(seconds, 1),
    }
    write_json_atomic(out / "results.json", results)
    table = markdown_table(rows, names, split_names)
    where = str(cfg.path) if getattr(cfg, "path", None) is not None else cfg.name
    report = experiment_report(
        source,
        table,
        metrics,
        results["ctgi"],
        seconds,
        where,
        paired=paired,
        intervals=results["intervals"],
        tasks=results["tasks"],
    )
    write_text_atomic(out / "table.md", report)
    plot_accuracy(rows, names, split_names, out / "accuracy.png")
    log("\n" + table)
    log(f"wrote {out / 'results.json'}, {out / 'table.md'}, {out / 'accuracy.png'} in {seconds:.0f} s")
    return results


def run_experiment(
    cfg: ExperimentConfig | ArchitectureGrid,
    out_dir: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    resume: bool = False,
    report_to: list[str] | None = None,
    trust_remote_code: bool = False,
    workers: int = 1,
) -> dict:
    """``roma experiment``: ``run`` then ``write_results`` (or a pre-training grid's own run)."""
    if isinstance(cfg, ArchitectureGrid):
        from moe_roma.experiments.pretraining_study import run_pretraining_study

        if workers > 1:
            raise RomaError(
                f"{cfg.path}: --workers is for comparison grids; a kind: architectures file sets its "
                "builds at once with its own 'workers' key"
            )
        if report_to:
            raise RomaError(
                f"{cfg.path}: --report-to is not supported for kind: architectures (each build writes "
                "metrics.jsonl)"
            )
        out = output_folder(cfg, out_dir)
        with _held(out):
            return run_pretraining_study(cfg.mapping, str(cfg.path), out, log=log, resume=resume)
    with _held(output_folder(cfg, out_dir)):
        done = run(cfg, out_dir, progress, log, resume, report_to, trust_remote_code, workers)
        return write_results(done, log)


@contextlib.contextmanager
def _held(out: Path) -> Iterator[None]:
    """Hold ``out``'s folder lock for the whole grid, so that a second `roma experiment` into the same
    folder (a second worker, a repeated --resume) is refused instead of interleaving its runs; a folder
    this run created is removed again if the run stops before writing anything into it."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with FolderLock(out, "roma experiment"):
            yield
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()
        raise


def paired_tests(
    details: dict, pairs: list, methods: list[str], splits: list[str], seeds: list[int], where: str
) -> list:
    """Paired McNemar tests of method A against method B on the same items, per split and seed.

    ``pairs`` is the experiment file's ``paired`` list of ``[A, B]`` names. Per split: the accuracy
    difference A - B per seed, its mean with a 95% t-interval over seeds, and each seed's exact
    McNemar p-value (the items are the same for both; seeds are not pooled).
    """
    out = []
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or any(p not in methods for p in pair):
            raise RomaError(f"{where}'paired' entries must be [method, method] of this grid, got {pair!r}")
        a, b = pair
        for split in splits:
            per_seed = []
            for seed in seeds:
                ra = details.get(f"{a}/seed{seed}", {}).get("splits", {}).get(split)
                rb = details.get(f"{b}/seed{seed}", {}).get("splits", {}).get(split)
                if ra is None or rb is None or len(ra["correct"]) != len(rb["correct"]):
                    continue
                cmp = compare_paired(rb["correct"], ra["correct"])
                per_seed.append(
                    {
                        "seed": seed,
                        "diff": cmp.diff,
                        "p_value": cmp.p_value,
                        "only_a": cmp.only_tuned,
                        "only_b": cmp.only_base,
                    }
                )
            diffs = [x["diff"] for x in per_seed]
            out.append(
                {
                    "a": a,
                    "b": b,
                    "split": split,
                    "per_seed": per_seed,
                    "mean_diff": sum(diffs) / len(diffs) if diffs else None,
                    "ci": mean_interval(diffs),
                    "n_significant": sum(x["p_value"] < 0.05 for x in per_seed),
                }
            )
    return out


def seed_intervals(rows: list[dict]) -> dict:
    """Each method's mean accuracy per split with a 95% t-interval over seeds."""
    agg = aggregate(rows)
    return {
        f"{m}/{s}": {"mean": a["mean"], "ci": mean_interval(a["values"]) if "values" in a else None}
        for (m, s), a in agg.items()
    }


def per_task_accuracy(details: dict, methods: list[str], splits: list[str]) -> dict:
    """Each method's accuracy on each task family of each split, mean over its seeds:
    ``{split: {task: {method: mean}}}``; a split whose items carry one task family or none is left out.
    A seed-free method's one run stands for every seed, so its mean is that run's accuracy."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for split in splits:
        per_method: dict[str, dict[str, list[float]]] = {}
        tasks: dict[str, None] = {}
        for key, outcome in details.items():
            method = key.rsplit("/seed", 1)[0]
            for task, acc in outcome.get("splits", {}).get(split, {}).get("tasks", {}).items():
                tasks.setdefault(task)
                if acc is not None:
                    per_method.setdefault(method, {}).setdefault(task, []).append(acc)
        if len(tasks) < 2:
            continue
        out[split] = {
            task: {
                m: (sum(v) / len(v)) if (v := per_method.get(m, {}).get(task)) else None
                for m in methods
                if m in per_method
            }
            for task in sorted(tasks)
        }
    return out


def cross_task_generalisation(rows: list[dict], splits: list[str]) -> dict:
    """The cross-task generalisation index (CTGI): a method's gain over base on held-out task families
    divided by its gain on the trained families (in_dist). 1: the gain transfers fully; 0: not at all;
    undefined (None) when the in-distribution gain is zero or negative."""
    if "heldout_tasks" not in splits or "in_dist" not in splits:
        return {}
    agg = aggregate(rows)
    base_in, base_out = agg.get(("base", "in_dist")), agg.get(("base", "heldout_tasks"))
    if not base_in or not base_out:
        return {}
    out = {}
    for (method, split), a in agg.items():
        if split != "in_dist" or method == "base":
            continue
        held = agg.get((method, "heldout_tasks"))
        gain_in = a["mean"] - base_in["mean"]
        gain_out = held["mean"] - base_out["mean"] if held else None
        out[method] = {
            "gain_in_dist": gain_in,
            "gain_heldout": gain_out,
            "ctgi": (gain_out / gain_in) if gain_out is not None and gain_in > 0 else None,
        }
    return out
