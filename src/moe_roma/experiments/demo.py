"""``roma demo``: the whole method end to end on the bundled testbed, on a CPU, in minutes.

collect (base routing on the RoMA training set) -> neighbour graph -> train ``router_tuning``
(no regulariser) and ``roma`` (manifold) with the same hyper-parameters -> evaluate ``base``,
``router_tuning`` and ``roma`` on the ``in_dist``, ``shifted`` and ``heldout_tasks`` splits ->
table, ``results.json``, ``report.md`` and plots.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from moe_roma import __version__
from moe_roma.experiments.comparison import Comparison
from moe_roma.experiments.grid import load_data, load_experiment, parse_methods
from moe_roma.io.atomic import write_json_atomic, write_text_atomic
from moe_roma.io.config import build_config
from moe_roma.io.errors import RomaError
from moe_roma.manifold.embed import embed_texts
from moe_roma.manifold.metrics import knn_overlap, routing_entropy_per_layer
from moe_roma.methods.roma.config import TrainConfig
from moe_roma.models.checkpoint import apply_router_checkpoint, restore_routers, router_snapshot
from moe_roma.models.loading import load_model
from moe_roma.report.experiments import demo_report
from moe_roma.report.plots import plot_expert_utilisation, plot_routing_projection, plot_training_curves
from moe_roma.report.tables import console_table
from moe_roma.routing.collect import collect_routing
from moe_roma.testbed import DEFAULT_TESTBED

# The demo is an experiment like any other: its settings live in these files, not in Python. Each
# testbed has its own, since the tuned layers and the validation-chosen settings differ.
_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEMO_CONFIGS = {"downstream": _CONFIGS / "demo.yaml", "in-domain": _CONFIGS / "demo-in-domain.yaml"}
DEMO_CONFIG = DEMO_CONFIGS[DEFAULT_TESTBED]


def run_demo(
    out_dir: str | Path = "runs/demo",
    seeds: list[int] | tuple[int, ...] | None = None,
    overrides: list[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    config_path: str | Path | None = None,
    testbed: str | None = None,
) -> dict:
    """Run the demo and write its outputs into ``out_dir``; returns the results.

    The settings come from ``config_path``, or else from the testbed's own file
    (``configs/demo.yaml`` for ``downstream``, the default; ``configs/demo-in-domain.yaml``).
    ``overrides`` (``key=value``) change a training setting of every trained method; ``seeds``
    replaces the file's seeds; ``testbed`` with an explicit ``config_path`` replaces its testbed.
    """
    from moe_roma.testbed import testbed_model_path

    if config_path is None:
        if testbed is not None and testbed not in DEMO_CONFIGS:
            raise RomaError(f"unknown testbed {testbed!r} (choose from {', '.join(DEMO_CONFIGS)})")
        config_path = DEMO_CONFIGS[testbed or DEFAULT_TESTBED]
    cfg = load_experiment(config_path)
    if testbed is not None:
        cfg["data"] = {**cfg["data"], "testbed": testbed}
    where = str(config_path)
    train_config = build_config(TrainConfig, cfg.get("train") or {}, overrides)
    methods = parse_methods(cfg, where, train_config)
    for m in methods:  # the overrides win over each method's own changes, as they do over the file's
        if m.kind == "train" and overrides:
            m.config = build_config(TrainConfig, None, overrides, base=m.config)
    seeds = list(seeds) if seeds is not None else [int(s) for s in cfg.get("seeds", [0])]
    start = time.perf_counter()
    out = Path(out_dir)
    name = cfg["data"].get("testbed")
    path = testbed_model_path() if name is True else testbed_model_path(str(name))
    if not (path / "config.json").is_file():
        raise RomaError(f"{path}: the bundled testbed model is missing; build it with `roma testbed build`")
    torch.manual_seed(0)
    model_path, train_examples, splits = load_data(cfg, where, cfg.get("limit"))
    model, tok = load_model(model_path, dtype="float32", device="cpu")
    log(
        f"testbed: {type(model).__name__}, train {len(train_examples)} items, "
        + ", ".join(f"{s} {len(v)}" for s, v in splits.items())
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
        collect_layers=cfg.get("collect_layers", train_config.layers),
        batch_size=int(cfg.get("batch_size", 32)),
        progress=progress,
        log=log,
    )
    rows, meta = comparison.run()
    method_names, split_names = [m.name for m in methods], list(splits)
    table = console_table(rows, method_names, split_names)
    log("\n" + table)

    # Routing of the in-distribution items before and after (first seed), for plots and alignment.
    seed0 = seeds[0]
    base_routers = router_snapshot(model, comparison.info)
    probe = splits["in_dist"]
    routing = {}
    for label, ckpt in (
        ("base", None),
        ("roma", out / "runs" / "roma" / f"seed{seed0}"),
        ("router_tuning", out / "runs" / "router_tuning" / f"seed{seed0}"),
    ):
        restore_routers(model, base_routers)
        if ckpt is not None:
            apply_router_checkpoint(model, ckpt)
        store, _ = collect_routing(
            model,
            tok,
            probe,
            layers=comparison.store.layers,
            scoring="continuation",
            progress=False,
            info=comparison.info,
        )
        routing[label] = store.routing
    restore_routers(model, base_routers)
    emb = embed_texts([ex.question for ex in probe])
    alignment = {
        label: {"knn_overlap@5": knn_overlap(emb, r, 5), "entropy": routing_entropy_per_layer(r)}
        for label, r in routing.items()
    }
    plots = {
        "training_curves": plot_training_curves(
            {m: out / "runs" / m / f"seed{seed0}" / "metrics.jsonl" for m in ("router_tuning", "roma")},
            out / "training_curves.png",
        ),
        "expert_utilisation": plot_expert_utilisation(
            {"base": routing["base"], "roma": routing["roma"]},
            comparison.store.layers,
            comparison.info.routers[comparison.store.layers[0]].top_k,
            out / "expert_utilisation.png",
        ),
        "routing_pca": plot_routing_projection(
            {"base": routing["base"], "roma": routing["roma"]},
            [ex.task for ex in probe],
            out / "routing_pca.png",
        ),
    }
    seconds = time.perf_counter() - start
    results = {
        "rows": rows,
        "config": {
            **meta,
            "demo_seeds": list(seeds),
            "testbed_model": str(path),
            "demo_config": str(config_path),
        },
        "package_version": __version__,
        "alignment_in_dist": alignment,
        "seconds": round(seconds, 1),
    }
    write_json_atomic(out / "results.json", results)
    write_text_atomic(
        out / "report.md", demo_report(rows, meta, alignment, method_names, split_names, seconds)
    )
    log(f"\nwrote {out / 'results.json'}, {out / 'report.md'} and {len(plots)} plots in {seconds:.0f} s")
    return results
