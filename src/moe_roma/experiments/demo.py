"""``roma demo``: the whole method end to end on the bundled testbed, on a CPU, in minutes.

collect (base routing on the RoMA training set) -> neighbour graph -> train ``router_tuning``
(no regulariser) and ``roma`` (manifold) with the same hyper-parameters -> evaluate ``base``,
``router_tuning`` and ``roma`` on the ``in_dist``, ``shifted`` and ``heldout_tasks`` splits ->
table, ``results.json``, ``report.md`` and plots.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from moe_roma import __version__
from moe_roma.experiments.config import ExperimentConfig
from moe_roma.experiments.grid import GridRun, run
from moe_roma.io.atomic import write_json_atomic, write_text_atomic
from moe_roma.io.errors import RomaError
from moe_roma.manifold.embed import embed_texts
from moe_roma.manifold.metrics import knn_overlap, routing_entropy_per_layer
from moe_roma.models.checkpoint import apply_router_checkpoint, restore_routers, router_snapshot
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


def demo_config(
    testbed: str | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Sequence[str] | None = None,
    config_path: str | Path | None = None,
) -> ExperimentConfig:
    """The demo's experiment: ``config_path``, else the testbed's own file (``configs/demo.yaml`` for
    ``downstream``, the default; ``configs/demo-in-domain.yaml``). ``seeds`` replaces the file's seeds,
    ``testbed`` its testbed, and ``overrides`` (``key=value``) change a training setting of every
    trained method, over the method's own changes."""
    if config_path is None:
        if testbed is not None and testbed not in DEMO_CONFIGS:
            raise RomaError(f"unknown testbed {testbed!r} (choose from {', '.join(DEMO_CONFIGS)})")
        config_path = DEMO_CONFIGS[testbed or DEFAULT_TESTBED]
    cfg = ExperimentConfig.from_yaml(config_path)
    changes: dict = {}
    if testbed is not None:
        changes["data.testbed"] = testbed
    if seeds is not None:
        changes["seeds"] = list(seeds)
    if changes:
        cfg = cfg.merge(changes)
    return cfg.with_train_settings(list(overrides)) if overrides else cfg


def run_demo(
    out_dir: str | Path = "runs/demo",
    seeds: Sequence[int] | None = None,
    overrides: Sequence[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    config_path: str | Path | None = None,
    testbed: str | None = None,
) -> dict:
    """``run(demo_config(...))`` and the demo's report into ``out_dir``; returns the results."""
    cfg = demo_config(testbed, seeds, overrides, config_path)
    return write_demo(run(cfg, out_dir, progress=progress, log=log), log)


def write_demo(done: GridRun, log: Callable[[str], None] = print) -> dict:
    """The demo's report of a finished run: the table, routing of ``in_dist`` before and after
    training (first seed) for the alignment figures and plots, ``results.json`` and ``report.md``."""
    from moe_roma.testbed import testbed_model_path

    cfg, out, rows, meta = done.cfg, done.out, done.rows, done.meta
    splits, seeds = done.splits, list(cfg.seeds)
    method_names, split_names = [m.name for m in cfg.grid()], list(splits)
    table = console_table(rows, method_names, split_names)
    log("\n" + table)

    # Routing of the in-distribution items before and after (first seed), for plots and alignment.
    seed0 = seeds[0]
    probe = splits["in_dist"]
    routing = _probe_routing(done, probe, seed0)
    emb = embed_texts([ex.question for ex in probe])
    alignment = {
        label: {"knn_overlap@5": knn_overlap(emb, r, 5), "entropy": routing_entropy_per_layer(r)}
        for label, r in routing.items()
    }
    plots = _plots(done, probe, routing, seed0)
    seconds = time.perf_counter() - done.start
    results = {
        "rows": rows,
        "config": {
            **meta,
            "demo_seeds": seeds,
            "testbed_model": str(testbed_model_path(cfg.data.testbed)),
            "demo_config": str(cfg.path),
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


def _probe_routing(done: GridRun, probe: list, seed0: int) -> dict:
    """The routing of ``probe`` under the base routers and under the first seed's trained ones; the
    model's own routers are restored afterwards."""
    cfg, out, comparison = done.cfg, done.out, done.comparison
    model, tok = comparison.model, comparison.tokenizer
    base_routers = router_snapshot(model, comparison.info)
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
            scoring=cfg.scoring,
            progress=False,
            info=comparison.info,
        )
        routing[label] = store.routing
    restore_routers(model, base_routers)
    return routing


def _plots(done: GridRun, probe: list, routing: dict, seed0: int) -> dict:
    """The demo's figures: training curves, expert utilisation and a routing projection, base vs roma."""
    out, comparison = done.out, done.comparison
    return {
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
