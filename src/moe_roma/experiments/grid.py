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

import time
from pathlib import Path

from moe_roma import __version__
from moe_roma.io.atomic import write_json_atomic, write_text_atomic
from moe_roma.io.errors import RomaError
from moe_roma.experiments.comparison import METHOD_KINDS, Comparison, Method
from moe_roma.report.tables import aggregate, markdown_table
from moe_roma.methods.roma.config import TrainConfig, load_train_config
from moe_roma.io.yamlfile import load_yaml_mapping

TOP_KEYS = {"name", "data", "seeds", "train", "methods", "ablations", "scoring", "batch_size", "limit",
            "metrics_split", "collect_layers"}  # fmt: skip
PSEUDO_SETTINGS = {"train_fraction"}  # method options handled by the runner, not TrainConfig


def load_experiment(path: str | Path) -> dict:
    p = Path(path)
    cfg = load_yaml_mapping(p, "experiment configuration", "a mapping with 'methods', 'seeds' and 'data'")
    unknown = sorted(set(cfg) - TOP_KEYS)
    if unknown:
        raise RomaError(f"{p}: unknown keys {unknown} (known: {sorted(TOP_KEYS)})")
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
    need(isinstance(seeds, list) and bool(seeds) and all(map(is_int, seeds)), "'seeds' must be a list of integers", seeds)
    for key in ("limit", "batch_size"):
        need(cfg.get(key) is None or (is_int(cfg[key]) and cfg[key] >= 1), f"'{key}' must be a positive integer", cfg.get(key))
    need(isinstance(cfg["methods"], list) and bool(cfg["methods"]), "'methods' must be a non-empty list", cfg["methods"])
    for key in ("train",):
        need(cfg.get(key) is None or isinstance(cfg[key], dict), f"'{key}' must be a mapping of training settings", cfg.get(key))
    need(cfg.get("ablations") is None or isinstance(cfg["ablations"], list), "'ablations' must be a list", cfg.get("ablations"))
    data = cfg["data"]
    need(isinstance(data, dict), "'data' must be a mapping", data)
    if "eval" in data:
        need(isinstance(data["eval"], dict), "'data.eval' must map split names to data files", data["eval"])
    if data.get("validation") is not None:
        v = data["validation"]
        need(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 0.5,
             "'data.validation' must be the share of train to hold out, in (0, 0.5]", v)  # fmt: skip


def parse_methods(cfg: dict, where: str) -> list[Method]:
    methods = []
    known = set(TrainConfig().to_dict()) | PSEUDO_SETTINGS
    for i, m in enumerate(cfg["methods"]):
        if not isinstance(m, dict) or "name" not in m:
            raise RomaError(f"{where}: methods[{i}] needs a 'name'")
        kind = m.get("kind", "train")
        if kind not in METHOD_KINDS:
            raise RomaError(f"{where}: methods[{i}] ({m['name']}): unknown kind {kind!r} ({', '.join(METHOD_KINDS)})")
        overrides = dict(m.get("overrides") or m.get("options") or {})
        if kind == "train":
            bad = sorted(set(overrides) - known)
            if bad:
                raise RomaError(f"{where}: method {m['name']}: unknown training settings {bad}")
        methods.append(Method(str(m["name"]), kind, overrides))
    for j, ab in enumerate(cfg.get("ablations") or []):
        if not isinstance(ab, dict) or "axis" not in ab or "values" not in ab:
            raise RomaError(f"{where}: ablations[{j}] needs 'axis' and 'values'")
        base_name = ab.get("base", "roma")
        base = next((m for m in methods if m.name == base_name), None)
        if base is None or base.kind != "train":
            raise RomaError(f"{where}: ablations[{j}]: base method {base_name!r} is not a trained method")
        if ab["axis"] not in known:
            raise RomaError(f"{where}: ablations[{j}]: unknown setting {ab['axis']!r}")
        for value in ab["values"]:
            label = ab.get("label", "{base}[{axis}={value}]").format(base=base_name, axis=ab["axis"], value=value)
            methods.append(Method(label, "train", {**base.overrides, ab["axis"]: value}))
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

        suite = load_testbed_splits(int(data.get("suite_seed", 0)))
        model, train = testbed_model_path(), suite["train"]
        names = data.get("splits", ["in_dist", "shifted", "heldout_tasks"])
        unknown = [s for s in names if s not in suite and s != "validation"]
        if unknown:
            raise RomaError(f"{where}: unknown testbed splits {unknown} (known: in_dist, shifted, heldout_tasks, validation)")
        splits = {s: cut(suite[s]) for s in names if s != "validation"}
    else:
        from moe_roma.data.loaders import load_examples

        for key in ("model", "train", "eval"):
            if key not in data:
                raise RomaError(f"{where}: 'data' needs 'model', 'train' and 'eval' (or testbed: true)")
        fmt = data.get("format")
        model, train = data["model"], load_examples(data["train"], format=fmt)
        names = list(data["eval"])
        splits = {name: cut(load_examples(path, format=fmt)) for name, path in data["eval"].items()}
    if data.get("validation"):
        train, validation = hold_out_validation(train, float(data["validation"]))
        splits = {"validation": cut(validation), **splits}
        if "validation" in names:  # keep the order the configuration asked for
            splits = {s: splits[s] for s in names if s in splits} | splits
    elif "validation" in names:
        raise RomaError(f"{where}: the split 'validation' needs 'data.validation' (the share of train to hold out)")
    return model, train, splits


def run_experiment(config_path: str | Path, out_dir: str | Path | None = None, progress: bool = True, log=print) -> dict:
    from moe_roma.models.loading import load_model

    start = time.perf_counter()
    where = str(config_path)
    cfg = load_experiment(config_path)
    methods = parse_methods(cfg, where)
    seeds = [int(s) for s in cfg.get("seeds", [0])]
    try:
        train_config = load_train_config(None, [f"{k}={v}" for k, v in (cfg.get("train") or {}).items()])
    except RomaError as exc:
        raise RomaError(f"{where}: 'train': {exc}") from None
    out = Path(out_dir or Path("runs") / str(cfg.get("name", Path(config_path).stem)))
    model_path, train_examples, splits = load_data(cfg, where, cfg.get("limit"))
    model, tok = load_model(
        model_path, dtype=train_config.dtype, device=train_config.device,
        attn_implementation=train_config.attn_implementation,
    )  # fmt: skip
    log(f"experiment {cfg.get('name', '')}: {len(methods)} methods x {len(seeds)} seeds on "
        + ", ".join(f"{k} ({len(v)})" for k, v in splits.items()))  # fmt: skip
    comparison = Comparison(
        model, tok, train_examples, splits, methods, seeds, train_config, out, scoring=cfg.get("scoring", "continuation"),
        # Every MoE layer is recorded, so that layer ablations find their routing in the one store.
        collect_layers=cfg.get("collect_layers", "all"), batch_size=int(cfg.get("batch_size", 32)),
        progress=progress, log=log, metrics_split=cfg.get("metrics_split", next(iter(splits))),
    )  # fmt: skip
    rows, meta = comparison.run()
    names, split_names = [m.name for m in methods], list(splits)
    metrics = {key: outcome["metrics"] for key, outcome in comparison.details.items() if "metrics" in outcome}
    seconds = time.perf_counter() - start
    results = {
        "rows": rows, "config": {**meta, "experiment": cfg}, "metrics": metrics,
        "ctgi": cross_task_generalisation(rows, split_names), "package_version": __version__,
        "seconds": round(seconds, 1),
    }  # fmt: skip
    write_json_atomic(out / "results.json", results)
    table = markdown_table(rows, names, split_names)
    write_text_atomic(out / "table.md", render_table_md(cfg, table, metrics, results["ctgi"], seconds, str(config_path)))
    plot_results(rows, names, split_names, out / "accuracy.png")
    log("\n" + table)
    log(f"wrote {out / 'results.json'}, {out / 'table.md'}, {out / 'accuracy.png'} in {seconds:.0f} s")
    return results


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
        out[method] = {"gain_in_dist": gain_in, "gain_heldout": gain_out,
                       "ctgi": (gain_out / gain_in) if gain_out is not None and gain_in > 0 else None}  # fmt: skip
    return out


def render_table_md(cfg, table, metrics, ctgi, seconds, config_path) -> str:
    lines = [f"# {cfg.get('name', 'experiment')}", "",
             f"Produced by `roma experiment {config_path}` (moe-roma {__version__}) in {seconds:.0f} s.", "", table]  # fmt: skip
    if ctgi:
        lines += ["## Cross-task generalisation index", "",
                  "Gain over base on held-out task families divided by the gain on the trained families "
                  "(in_dist), seed means; undefined when the in-distribution gain is not positive.", "",
                  "| method | gain in_dist | gain heldout_tasks | CTGI |", "|---|---|---|---|"]  # fmt: skip
        for m, v in ctgi.items():
            c = "-" if v["ctgi"] is None else f"{v['ctgi']:.2f}"
            go = "-" if v["gain_heldout"] is None else f"{v['gain_heldout']:+.1%}"
            lines.append(f"| {m} | {v['gain_in_dist']:+.1%} | {go} | {c} |")
        lines.append("")
    if metrics:
        lines += ["## Routing metrics (first evaluation split)", "",
                  "`knn_overlap@5`: share of each item's 5 nearest neighbours in sentence-embedding space that are "
                  "also its 5 nearest in routing space; `cka`: linear CKA between embeddings and routing vectors; "
                  "entropy in nats per tuned layer; utilisation: min/max share of top-k slots per layer.", "",
                  "| run | knn_overlap@5 | cka | entropy | utilisation min..max |", "|---|---|---|---|---|"]  # fmt: skip
        for key, m in metrics.items():
            ent = ", ".join(f"{h:.2f}" for h in m["entropy"])
            util = ", ".join(f"{a:.2f}..{b:.2f}" for a, b in zip(m["utilisation_min"], m["utilisation_max"]))
            lines.append(f"| {key} | {m['knn_overlap@5']:.3f} | {m['cka']:.3f} | {ent} | {util} |")
        lines.append("")
    lines += ["![accuracy](accuracy.png)", ""]
    return "\n".join(lines)


def plot_results(rows: list[dict], methods: list[str], splits: list[str], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    agg = aggregate(rows)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(methods) * len(splits) / 2), 4))
    width = 0.8 / len(methods)
    x = np.arange(len(splits))
    for i, m in enumerate(methods):
        means = [agg.get((m, s), {}).get("mean") or 0 for s in splits]
        stds = [agg.get((m, s), {}).get("std") or 0 for s in splits]
        ax.bar(x + i * width - 0.4 + width / 2, means, width, yerr=stds, capsize=2, label=m)
    ax.set_xticks(x, splits)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
