"""``roma experiment CONFIG.yaml``: a grid of methods, settings and seeds, one tidy results file.

A configuration names the model and data (the bundled testbed, or files), the shared training
settings, the methods (``base``, ``train`` with overrides, ``c3po``, ``oracle``), optional ablation
axes that expand into more trained methods, and the seeds. Outputs: ``results.json`` (rows as in
the demo's, plus ``setting``), ``table.md`` (mean ± std over seeds, metrics beyond accuracy) and plots.

    name: ablation-k
    data: {testbed: true}
    seeds: [0, 1, 2]
    train: {epochs: 3, lr: 0.01, layers: last3, task_loss: continuation}
    methods:
      - {name: base, kind: base}
      - {name: roma, kind: train}
    ablations:
      - {axis: k, values: [1, 5]}          # adds methods "roma[k=1]" and "roma[k=5]"
"""

from __future__ import annotations

import difflib
import time
from pathlib import Path

from moe_roma import __version__
from moe_roma.experiments.comparison import Comparison, Method
from moe_roma.io.atomic import write_json_atomic, write_text_atomic
from moe_roma.io.config import build_config
from moe_roma.io.errors import RomaError
from moe_roma.io.outputs import safe_name
from moe_roma.io.yamlfile import load_yaml_mapping
from moe_roma.methods.registry import METHODS
from moe_roma.methods.roma.config import TrainConfig
from moe_roma.report.experiments import experiment_report, plot_accuracy
from moe_roma.report.tables import aggregate, markdown_table
from moe_roma.scoring.stats import compare_paired, mean_interval
from moe_roma.training.trackers import check_trackers

TOP_KEYS = {
    "name",
    "data",
    "seeds",
    "train",
    "methods",
    "ablations",
    "scoring",
    "batch_size",
    "limit",
    "metrics_split",
    "collect_layers",
    "paired",
}


def load_experiment(path: str | Path) -> dict:
    p = Path(path)
    cfg = load_yaml_mapping(p, "experiment configuration", "a mapping with 'methods', 'seeds' and 'data'")
    unknown = sorted(set(cfg) - TOP_KEYS)
    if unknown:
        near = difflib.get_close_matches(unknown[0], sorted(TOP_KEYS), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else f" (known: {sorted(TOP_KEYS)})"
        raise RomaError(f"{p}: unknown keys {unknown}{hint}")
    for key in ("methods", "data"):
        if key not in cfg:
            raise RomaError(f"{p}: missing '{key}'")
    _check_types(cfg, p)
    return cfg


def _check_types(cfg: dict, p: Path) -> None:
    """Refuse values of the wrong type now, in one sentence, not as a traceback mid-run."""

    def need(ok: bool, what: str, value) -> None:
        if not ok:
            text = repr(value)
            raise RomaError(f"{p}: {what}, got {text if len(text) <= 60 else text[:57] + '...'}")

    def is_int(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    seeds = cfg.get("seeds", [0])
    need(
        isinstance(seeds, list) and bool(seeds) and all(map(is_int, seeds)),
        "'seeds' must be a list of integers",
        seeds,
    )
    for key in ("limit", "batch_size"):
        need(
            cfg.get(key) is None or (is_int(cfg[key]) and cfg[key] >= 1),
            f"'{key}' must be a positive integer",
            cfg.get(key),
        )
    need(
        isinstance(cfg["methods"], list) and bool(cfg["methods"]),
        "'methods' must be a non-empty list",
        cfg["methods"],
    )
    for key in ("train",):
        need(
            cfg.get(key) is None or isinstance(cfg[key], dict),
            f"'{key}' must be a mapping of training settings",
            cfg.get(key),
        )
    need(
        cfg.get("ablations") is None or isinstance(cfg["ablations"], list),
        "'ablations' must be a list",
        cfg.get("ablations"),
    )
    data = cfg["data"]
    need(isinstance(data, dict), "'data' must be a mapping", data)
    need(
        data.get("suite_seed") is None or is_int(data["suite_seed"]),
        "'data.suite_seed' must be an integer",
        data.get("suite_seed"),
    )
    if "eval" in data:
        need(isinstance(data["eval"], dict), "'data.eval' must map split names to data files", data["eval"])
    if not data.get("testbed"):
        given = [k for k in ("train_split", "train_size") if k in data]
        need(
            not given,
            "'data.train_split' and 'data.train_size' choose testbed splits (cut a file with 'limit')",
            given,
        )
    if data.get("validation") is not None:
        v = data["validation"]
        need(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 0.5,
            "'data.validation' must be the share of train to hold out, in (0, 0.5]",
            v,
        )


def _settings(config_cls: type, values: dict, where: str, base=None):
    label = "training settings" if config_cls is TrainConfig else "settings"
    try:
        return build_config(config_cls, values, where="", base=base, label=label)
    except RomaError as exc:
        raise RomaError(f"{where}: {exc}") from None


def parse_methods(cfg: dict, where: str, train: TrainConfig | None = None) -> list[Method]:
    """The methods of an experiment, each with its typed settings: a ``TrainConfig`` (the shared
    ``train`` section with the method's ``overrides``) for ``train``, the registered kind's own config
    (from ``options``) for the others. Unknown settings are refused with the nearest valid name."""
    train = train or TrainConfig()
    methods = []
    for i, m in enumerate(cfg["methods"]):
        if not isinstance(m, dict) or "name" not in m:
            raise RomaError(f"{where}: methods[{i}] needs a 'name'")
        unknown = sorted(set(m) - {"name", "kind", "overrides", "options"})
        if unknown:
            raise RomaError(
                f"{where}: methods[{i}] ({m['name']}): unknown keys {unknown} (known: name, kind, "
                "overrides, options)"
            )
        kind = m.get("kind", "train")
        if kind not in METHODS:
            raise RomaError(
                f"{where}: methods[{i}] ({m['name']}): unknown kind {kind!r} ({', '.join(METHODS)})"
            )
        given = m.get("overrides") or m.get("options") or {}
        if not isinstance(given, dict):
            raise RomaError(f"{where}: methods[{i}] ({m['name']}): 'overrides' must be a mapping of settings")
        options = dict(given)
        fraction = float(options.pop("train_fraction", 1.0)) if kind == "train" else 1.0
        if not 0 < fraction <= 1:
            raise RomaError(f"{where}: method {m['name']}: train_fraction must lie in (0, 1], got {fraction}")
        what = f"{where}: method {m['name']}"
        config = (
            _settings(TrainConfig, options, what, base=train)
            if kind == "train"
            else (_settings(METHODS[kind].config, options, what))
        )
        methods.append(
            Method(safe_name(m["name"], where, "method name"), kind, config, dict(given), fraction)
        )
    for j, ab in enumerate(cfg.get("ablations") or []):
        if not isinstance(ab, dict) or "axis" not in ab or "values" not in ab:
            raise RomaError(f"{where}: ablations[{j}] needs 'axis' and 'values'")
        base_name = ab.get("base", "roma")
        base = next((m for m in methods if m.name == base_name), None)
        if base is None or base.kind != "train":
            raise RomaError(f"{where}: ablations[{j}]: base method {base_name!r} is not a trained method")
        for value in ab["values"]:
            label = ab.get("label", "{base}[{axis}={value}]").format(
                base=base_name, axis=ab["axis"], value=value
            )
            label = safe_name(label, where, "method name")  # runs/<method> is a folder of the results
            setting = {ab["axis"]: value}
            if ab["axis"] == "train_fraction":
                config, fraction = base.config, float(value)
            else:
                config = _settings(TrainConfig, setting, f"{where}: ablations[{j}]", base=base.config)
                fraction = base.train_fraction
            methods.append(Method(label, "train", config, {**base.overrides, **setting}, fraction))
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise RomaError(f"{where}: method names must be unique, got {names}")
    return methods


def hold_out_validation(examples: list, fraction: float) -> tuple[list, list]:
    """(train, validation): every ``round(1/fraction)``-th example is held out, so that every task
    and template keeps its share in both parts; deterministic, and the same for every seed."""
    step = max(2, round(1 / fraction))
    train = [ex for i, ex in enumerate(examples) if i % step != step - 1]
    validation = [ex for i, ex in enumerate(examples) if i % step == step - 1]
    return train, validation


def load_data(cfg: dict, where: str, limit: int | None):
    """(model path, training examples, evaluation splits) from the 'data' section.

    With ``validation: f``, a share f of the training examples is held out as the split
    ``validation`` (for choosing hyper-parameters without looking at the test splits).
    """
    data = cfg["data"]
    if not isinstance(data, dict):
        raise RomaError(f"{where}: 'data' must be a mapping")

    def cut(examples: list) -> list:
        return examples[:limit] if limit else examples

    if data.get("testbed"):
        from moe_roma.testbed import load_testbed_splits, testbed_model_path

        name, names = testbed_of(data, where)
        seed = int(data.get("suite_seed", 0))
        suite = load_testbed_splits(seed, include_pretrain=False, testbed=name)
        model, train = testbed_model_path(name), testbed_training_set(data, suite, name, seed, where)
        # A testbed that ships its own validation split uses it, unless the file asks to hold out a share.
        own_validation = "validation" in suite and not data.get("validation")
        splits = {s: cut(suite[s]) for s in names if s != "validation" or own_validation}
    else:
        for key in ("model", "train", "eval"):
            if key not in data:
                raise RomaError(f"{where}: 'data' needs 'model', 'train' and 'eval' (or testbed: true)")
        fmt = data.get("format")
        model = data["model"]
        train = [ex for entry in train_sources(data, where) for ex in load_source(entry, fmt)]
        names = list(data["eval"])
        splits = {
            name: cut(load_source(source(entry, f"{where}: data.eval.{name}"), fmt))
            for name, entry in data["eval"].items()
        }
    if data.get("validation"):
        train, validation = hold_out_validation(train, float(data["validation"]))
        splits = {"validation": cut(validation), **splits}
        if "validation" in names:  # keep the order the configuration asked for
            splits = {s: splits[s] for s in names if s in splits} | splits
    elif "validation" in names and "validation" not in splits:
        raise RomaError(
            f"{where}: the split 'validation' needs 'data.validation' (the share of train to hold out)"
        )
    return model, train, splits


def training_split_names(data: dict, testbed: str, where: str) -> list[str]:
    """``data.train_split``: the testbed split(s) to train on (default ``train``), checked."""
    chosen = data.get("train_split", "train")
    names = [chosen] if isinstance(chosen, str) else chosen
    known = ("train", "train_large") if testbed == "downstream" else ("train",)
    if not isinstance(names, list) or not names or any(n not in known for n in names):
        raise RomaError(
            f"{where}: 'data.train_split' must name one or more training splits of the {testbed} "
            f"testbed ({', '.join(known)}), got {chosen!r}"
        )
    return names


def testbed_training_set(data: dict, suite: dict, testbed: str, seed: int, where: str) -> list:
    """The testbed items to train on: the ``train_split`` splits in order, cut to their first ``train_size``
    (``train_large`` is in a seeded order, so any prefix is a nested subset with the full split's family mix)."""
    examples: list = []
    for split in training_split_names(data, testbed, where):
        if split == "train_large":
            from moe_roma.testbed.downstream import build_train_large

            examples += build_train_large(seed)
        else:
            examples += suite[split]
    size = data.get("train_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= len(examples):
            raise RomaError(
                f"{where}: 'data.train_size' must be an integer from 1 to {len(examples)} (the size of "
                f"{data.get('train_split', 'train')}), got {size!r}"
            )
        examples = examples[:size]
    return examples


def testbed_of(data: dict, where: str) -> tuple[str, list[str]]:
    """(testbed name, evaluation splits) of a ``data: {testbed: ...}`` section, checked without loading it."""
    from moe_roma.testbed import DEFAULT_TESTBED, TESTBEDS, testbed_split_names

    # `testbed: true` is the default testbed (downstream, as in `roma testbed` and `roma demo`); or name it.
    name = DEFAULT_TESTBED if data["testbed"] is True else str(data["testbed"])
    if name not in TESTBEDS:
        raise RomaError(f"{where}: unknown testbed {name!r} (known: {', '.join(TESTBEDS)})")
    names = data.get("splits", ["in_dist", "shifted", "heldout_tasks"])
    known = [s for s in testbed_split_names(name) if s != "train"]
    if not isinstance(names, list) or not all(isinstance(s, str) for s in names):
        raise RomaError(f"{where}: 'data.splits' must be a list of split names (known: {', '.join(known)})")
    unknown = [s for s in names if s not in known and s != "validation"]
    if unknown:
        raise RomaError(f"{where}: unknown testbed splits {unknown} (known: {', '.join(known)}, validation)")
    return name, list(names)


def check_grid(cfg: dict, where: str, methods: list[Method], splits: list[str]) -> None:
    """What a run would otherwise find only late (after collection, or after the whole grid): every
    trained method scores answers the way the grid collects them, ``paired`` names pairs of this grid's
    methods, ``metrics_split`` is one of the splits, ``collect_layers`` is a layer selection. The dry
    run and the real run both call it before any model loads."""
    from moe_roma.models.discovery import parse_layer_spec

    scoring = cfg.get("scoring", "continuation")
    if scoring not in ("letter", "continuation"):
        raise RomaError(f"{where}: 'scoring' must be letter or continuation, got {scoring!r}")
    for m in methods:
        if m.kind == "train" and m.config.scoring != scoring:
            raise RomaError(
                f"{where}: method {m.name} trains with scoring={m.config.scoring}, but the grid collects "
                f"its routing with {scoring} scoring; set 'scoring' in 'train' (or the method) to {scoring}"
            )
    check_paired(cfg.get("paired") or [], [m.name for m in methods], where)
    split = cfg.get("metrics_split")
    if split is not None and split not in splits:
        raise RomaError(f"{where}: 'metrics_split' {split!r} is not one of the splits ({', '.join(splits)})")
    try:
        parse_layer_spec(cfg.get("collect_layers", "all"))
    except RomaError as exc:
        raise RomaError(f"{where}: 'collect_layers': {exc}") from None


def check_paired(pairs: object, methods: list[str], where: str) -> None:
    """``paired`` is a list of ``[A, B]`` pairs of two different methods of the grid."""
    if not isinstance(pairs, list):
        raise RomaError(f"{where}: 'paired' must be a list of [method, method] pairs, got {pairs!r}"[:300])
    for pair in pairs:
        ok = isinstance(pair, (list, tuple)) and len(pair) == 2 and all(p in methods for p in pair)
        if not ok or pair[0] == pair[1]:
            bad = [p for p in pair if p not in methods] if isinstance(pair, (list, tuple)) else []
            near = difflib.get_close_matches(str(bad[0]), methods, n=1) if bad else []
            hint = f"; did you mean {near[0]!r}?" if near else f" (methods: {', '.join(methods)})"
            raise RomaError(
                f"{where}: 'paired' entries must be [method, method] of two methods of this grid, got "
                f"{pair!r}{hint}"
            )


SOURCE_KEYS = {"source", "preset", "fields", "limit", "task"}
FIELD_KEYS = {"question", "choices", "answer", "context"}


def source(entry, where: str) -> dict:
    """One data source of an experiment file: a path or ``hf:`` spec, or a mapping ``{source, preset,
    fields: {question, choices, answer, context}, limit, task}``; checked without reading any data."""
    from moe_roma.data.presets import get_preset

    if isinstance(entry, str):
        entry = {"source": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("source"), str) or not entry["source"]:
        raise RomaError(
            f"{where}: a data source is a path, an hf:NAME[:CONFIG][:SPLIT] spec, or a mapping with "
            f"'source', got {entry!r}"[:300]
        )
    unknown = sorted(set(entry) - SOURCE_KEYS)
    if unknown:
        raise RomaError(
            f"{where}: unknown keys {unknown} in a data source (known: {', '.join(sorted(SOURCE_KEYS))})"
        )
    if entry.get("preset") is not None:
        get_preset(
            str(entry["preset"]), entry["source"]
        )  # an unknown preset fails here, naming the known ones
    fields = entry.get("fields")
    if fields is not None:
        if (
            not isinstance(fields, dict)
            or not {"question", "choices", "answer"} <= set(fields)
            or set(fields) - FIELD_KEYS
        ):
            raise RomaError(
                f"{where}: 'fields' must map question, choices and answer (and optionally context) to "
                "column names"
            )
        if entry.get("preset") is not None:
            raise RomaError(f"{where}: give 'preset' or 'fields', not both")
    limit = entry.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise RomaError(f"{where}: 'limit' must be a positive integer, got {limit!r}")
    if entry["source"].startswith("hf:"):
        from moe_roma.data.hf_source import parse_hub_spec

        parse_hub_spec(entry["source"])
    return entry


def train_sources(data: dict, where: str) -> list[dict]:
    """``data.train``: one source or a list of them (their examples are concatenated in order)."""
    entries = data["train"] if isinstance(data["train"], list) else [data["train"]]
    if not entries:
        raise RomaError(f"{where}: 'data.train' lists no sources")
    return [source(e, f"{where}: data.train[{i}]") for i, e in enumerate(entries)]


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


def experiment_folder(cfg: dict, config_path: str | Path, out_dir: str | Path | None = None) -> Path:
    """``out_dir``, else ``runs/<name>``: the file's ``name`` (or its stem) is a plain name that stays in ``runs``."""
    name = safe_name(cfg.get("name", Path(config_path).stem), str(config_path), "'name'")
    return Path(out_dir) if out_dir is not None else Path("runs") / name


def output_folder(config_path: str | Path, out_dir: str | Path | None = None) -> Path:
    """Where ``run_experiment(config_path, out_dir)`` writes (read before any work, for the output guard)."""
    cfg = load_yaml_mapping(
        Path(config_path), "experiment configuration", "a mapping with 'methods', 'seeds' and 'data'"
    )
    return experiment_folder(cfg, config_path, out_dir)


def _architecture_grid(config_path: str | Path) -> dict | None:
    """The file's mapping when it is a pre-training grid (``kind: architectures``), else None."""
    cfg = load_yaml_mapping(
        Path(config_path), "experiment configuration", "a mapping with 'methods', 'seeds' and 'data'"
    )
    return cfg if cfg.get("kind") == "architectures" else None


def plan_experiment(
    config_path: str | Path,
    out_dir: str | Path | None = None,
    report_to: list[str] | None = None,
    trust_remote_code: bool = False,
) -> list[str]:
    """What ``run_experiment`` would do, step by step, after checking everything that can be checked
    without loading a model or reading data: the file parses, every setting and method is valid, every
    data source is well formed and names a known preset, every local file exists."""
    where = str(config_path)
    arch_grid = _architecture_grid(config_path)
    if arch_grid is not None:
        from moe_roma.experiments.pretraining_study import plan_jobs

        out = experiment_folder(arch_grid, config_path, out_dir)
        jobs, splits = plan_jobs(arch_grid, where, out)
        steps = [
            f"experiment {arch_grid.get('name', Path(where).stem)!r} (kind: architectures): {len(jobs)} downstream "
            f"testbed builds, {arch_grid.get('workers', 1)} at a time, into {out}"
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
    cfg = load_experiment(config_path)
    trackers = check_trackers(report_to or [])
    train_config = _settings(TrainConfig, cfg.get("train") or {}, f"{where}: 'train'")
    methods = parse_methods(cfg, where, train_config)
    seeds = [int(s) for s in cfg.get("seeds", [0])]
    out = experiment_folder(cfg, config_path, out_dir)
    data = cfg["data"]
    steps = [
        f"experiment {cfg.get('name', Path(where).stem)!r}: {len(methods)} methods x {len(seeds)} seeds into {out}"
    ]
    if data.get("testbed"):
        name, names = testbed_of(data, where)
        trained = " + ".join(training_split_names(data, name, where))
        size = f", its first {data['train_size']} items" if data.get("train_size") else ""
        steps.append(f"1. load the bundled {name} testbed model and its splits; train on {trained}{size}")
        evals: dict = {s: "testbed" for s in names}
    else:
        for key in ("model", "train", "eval"):
            if key not in data:
                raise RomaError(f"{where}: 'data' needs 'model', 'train' and 'eval' (or testbed: true)")
        if not isinstance(data["eval"], dict) or not data["eval"]:
            raise RomaError(f"{where}: 'data.eval' must map split names to data sources")
        steps.append(
            f"1. load the model {data['model']} (dtype {train_config.runtime.dtype}, device "
            f"{train_config.runtime.device or 'first GPU, else CPU'})"
        )
        entries = train_sources(data, where)
        evals = {name: source(e, f"{where}: data.eval.{name}") for name, e in data["eval"].items()}
        for entry in [*entries, *evals.values()]:
            _check_local(entry, where)
        _check_model(data["model"], where, trust_remote_code)
        steps.append(f"2. read {len(entries)} training sources:")
        steps += [f"   - {_describe(e)}" for e in entries]
        steps.append(f"3. read {len(evals)} evaluation splits:")
        steps += [f"   - {name}: {_describe(e)}" for name, e in evals.items()]
    split_names = (
        list(evals) if not data.get("validation") or "validation" in evals else ["validation", *evals]
    )
    check_grid(cfg, where, methods, split_names)
    if data.get("validation"):
        steps.append(f"   hold out {data['validation']} of the training examples as the split 'validation'")
    steps.append(
        f"4. collect the base model's routing of the training examples (layers {cfg.get('collect_layers', 'all')}, "
        f"scoring {cfg.get('scoring', 'continuation')}) into {out / 'routing.json'}"
    )
    n = 5
    for seed in seeds:
        for m in methods:
            if METHODS[m.kind].kind == "weights":
                what = (
                    f"train routers ({m.config.layers}, lr {m.config.optimizer.lr}, regulariser "
                    f"{m.config.regularizer.name}, lambda {m.config.regularizer.lam}, k {m.config.graph.k}) into "
                    f"{out / 'runs' / m.name / f'seed{seed}'}, then evaluate"
                )
            elif METHODS[m.kind].kind == "test_time":
                what = "score every split with test-time routing"
            else:
                what = "evaluate the model as it is"
            steps.append(f"{n}. seed {seed}, {m.name} ({m.kind}): {what} on {', '.join(evals)}")
            n += 1
    if trackers:
        steps.append(f"   each method run is tracked in {', '.join(trackers)}")
    steps.append(f"{n}. write {out / 'results.json'}, {out / 'table.md'} and {out / 'accuracy.png'}")
    return steps


def _check_model(model: object, where: str, trust_remote_code: bool) -> None:
    """A local model folder that exists and needs no code of its own (a hub id is checked when it loads)."""
    from moe_roma.models.loading import check_no_remote_code

    text = str(model)
    if text.startswith((".", "/", "~")) and not Path(text).expanduser().exists():
        raise RomaError(f"{where}: data.model {text} does not exist")
    check_no_remote_code(text, trust_remote_code)


def _check_local(entry: dict, where: str) -> None:
    spec = entry["source"]
    if not spec.startswith("hf:") and not Path(spec).exists():
        raise RomaError(f"{where}: data source {spec} does not exist")


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


def run_experiment(
    config_path: str | Path,
    out_dir: str | Path | None = None,
    progress: bool = True,
    log=print,
    resume: bool = False,
    report_to: list[str] | None = None,
    trust_remote_code: bool = False,
) -> dict:
    """Run the grid of ``config_path`` into ``out_dir``; ``resume`` reuses the method runs an interrupted
    run of the same grid into the same folder finished (``outcomes.jsonl``); ``report_to`` names
    experiment trackers (one tracked run per method and seed); ``trust_remote_code`` lets the model
    folder run its own code (``--trust-remote-code``)."""
    from moe_roma.models.loading import load_model

    arch_grid = _architecture_grid(config_path)
    where = str(config_path)
    if arch_grid is not None:
        from moe_roma.experiments.pretraining_study import run_pretraining_study

        if report_to:
            raise RomaError(
                f"{where}: --report-to is not supported for kind: architectures (each build writes "
                "metrics.jsonl)"
            )
        out = experiment_folder(arch_grid, config_path, out_dir)
        return run_pretraining_study(arch_grid, str(config_path), out, log=log, resume=resume)
    start = time.perf_counter()
    where = str(config_path)
    cfg = load_experiment(config_path)
    trackers = check_trackers(report_to or [])  # a tracker that is not installed stops before any work
    train_config = _settings(TrainConfig, cfg.get("train") or {}, f"{where}: 'train'")
    methods = parse_methods(cfg, where, train_config)
    seeds = [int(s) for s in cfg.get("seeds", [0])]
    out = experiment_folder(cfg, config_path, out_dir)
    model_path, train_examples, splits = load_data(cfg, where, cfg.get("limit"))
    check_grid(
        cfg, where, methods, list(splits)
    )  # before the model loads: nothing fails after the grid's work
    model, tok = load_model(
        model_path,
        dtype=train_config.runtime.dtype,
        device=train_config.runtime.device,
        attn_implementation=train_config.runtime.attn_implementation,
        trust_remote_code=trust_remote_code,
    )
    log(
        f"experiment {cfg.get('name', '')}: {len(methods)} methods x {len(seeds)} seeds on "
        + ", ".join(f"{k} ({len(v)})" for k, v in splits.items())
    )
    comparison = Comparison(
        model,
        tok,
        train_examples,
        splits,
        methods,
        seeds,
        train_config,
        out,
        scoring=cfg.get("scoring", "continuation"),
        # Every MoE layer is recorded, so that layer ablations find their routing in the one store.
        collect_layers=cfg.get("collect_layers", "all"),
        batch_size=int(cfg.get("batch_size", 32)),
        progress=progress,
        log=log,
        metrics_split=cfg.get("metrics_split", next(iter(splits))),
        resume=resume,
        report_to=trackers,
    )
    rows, meta = comparison.run()
    names, split_names = [m.name for m in methods], list(splits)
    metrics = {key: outcome["metrics"] for key, outcome in comparison.details.items() if "metrics" in outcome}
    paired = paired_tests(comparison.details, cfg.get("paired") or [], names, split_names, seeds, where)
    seconds = time.perf_counter() - start
    results = {
        "rows": rows,
        "config": {**meta, "experiment": cfg},
        "metrics": metrics,
        "ctgi": cross_task_generalisation(rows, split_names),
        "paired": paired,
        "intervals": seed_intervals(rows),
        "package_version": __version__,
        "seconds": round(seconds, 1),
    }
    write_json_atomic(out / "results.json", results)
    table = markdown_table(rows, names, split_names)
    write_text_atomic(
        out / "table.md",
        experiment_report(
            cfg,
            table,
            metrics,
            results["ctgi"],
            seconds,
            str(config_path),
            paired=paired,
            intervals=results["intervals"],
        ),
    )
    plot_accuracy(rows, names, split_names, out / "accuracy.png")
    log("\n" + table)
    log(f"wrote {out / 'results.json'}, {out / 'table.md'}, {out / 'accuracy.png'} in {seconds:.0f} s")
    return results


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
            raise RomaError(f"{where}: 'paired' entries must be [method, method] of this grid, got {pair!r}")
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


def cross_task_generalisation(rows: list[dict], splits: list[str]) -> dict:
    """Seed 000's cross-task generalisation index: a method's gain over base on held-out task families
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
