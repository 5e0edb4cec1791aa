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
from moe_roma.io.atomic import write_json_atomic, write_text_atomic
from moe_roma.io.errors import RomaError
from moe_roma.manifold.embed import embed_texts
from moe_roma.manifold.metrics import knn_overlap, routing_entropy_per_layer
from moe_roma.models.checkpoint import apply_router_checkpoint
from moe_roma.models.loading import load_model
from moe_roma.experiments.comparison import Comparison, Method, restore_routers, router_snapshot
from moe_roma.report.plots import plot_expert_utilisation, plot_routing_projection, plot_training_curves
from moe_roma.report.tables import console_table, markdown_table
from moe_roma.routing.collect import collect_routing
from moe_roma.methods.roma.config import TrainConfig

EVAL_SPLITS = ("in_dist", "shifted", "heldout_tasks")
METHODS = [Method("base", "base"), Method("router_tuning", "train", {"regularizer": "none"}),
           Method("roma", "train", {"regularizer": "manifold"})]  # fmt: skip

# One set of hyper-parameters for both trained methods and every seed (the only difference between
# router_tuning and roma is the regulariser). The testbed is a base model that answers with text,
# so the task loss is the continuation one. lr and lambda are the ones each method did best with on
# a held-out validation split (configs/sweep.yaml, results/sweep): lr 3e-3 for both, lambda 0.2.
DEMO_TRAIN_CONFIG = TrainConfig(
    epochs=3,
    batch_size=32,
    lr=3e-3,
    weight_decay=0.01,
    warmup_ratio=0.1,
    lam=0.2,
    lam_warmup_ratio=0.1,
    k=3,
    sigma=0.4,
    layers="last3",
    task_loss="continuation",
    grad_clip=1.0,
)


def run_demo(
    out_dir: str | Path = "runs/demo",
    seeds: list[int] | tuple[int, ...] = (0,),
    train_config: TrainConfig = DEMO_TRAIN_CONFIG,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the demo and write its outputs into ``out_dir``; returns the results dictionary."""
    from moe_roma.testbed import load_testbed_splits, testbed_model_path

    start = time.perf_counter()
    out = Path(out_dir)
    path = testbed_model_path()
    if not (path / "config.json").is_file():
        raise RomaError(f"{path}: the bundled testbed model is missing; build it with `roma testbed build`")
    torch.manual_seed(0)
    model, tok = load_model(path, dtype="float32", device="cpu")
    suite = load_testbed_splits(0)
    splits = {s: suite[s] for s in EVAL_SPLITS}
    log(f"testbed: {type(model).__name__}, train {len(suite['train'])} items, "
        + ", ".join(f"{s} {len(v)}" for s, v in splits.items()))  # fmt: skip
    comparison = Comparison(
        model, tok, suite["train"], splits, METHODS, list(seeds), train_config, out, scoring="continuation",
        collect_layers=train_config.layers, batch_size=32, progress=progress, log=log,
    )  # fmt: skip
    rows, meta = comparison.run()
    methods, split_names = [m.name for m in METHODS], list(EVAL_SPLITS)
    table = console_table(rows, methods, split_names)
    log("\n" + table)

    # Routing of the in-distribution items before and after (first seed), for plots and alignment.
    seed0 = seeds[0]
    base_routers = router_snapshot(model, comparison.info)
    probe = splits["in_dist"]
    routing = {}
    for label, ckpt in (("base", None), ("roma", out / "runs" / "roma" / f"seed{seed0}"),
                        ("router_tuning", out / "runs" / "router_tuning" / f"seed{seed0}")):  # fmt: skip
        restore_routers(model, base_routers)
        if ckpt is not None:
            apply_router_checkpoint(model, ckpt)
        store, _ = collect_routing(model, tok, probe, layers=comparison.store.layers, scoring="continuation",
                                   progress=False, info=comparison.info)  # fmt: skip
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
            {"base": routing["base"], "roma": routing["roma"]}, comparison.store.layers,
            comparison.info.routers[comparison.store.layers[0]].top_k, out / "expert_utilisation.png",
        ),
        "routing_pca": plot_routing_projection(
            {"base": routing["base"], "roma": routing["roma"]}, [ex.task for ex in probe], out / "routing_pca.png"
        ),
    }  # fmt: skip
    seconds = time.perf_counter() - start
    results = {
        "rows": rows,
        "config": {**meta, "demo_seeds": list(seeds), "testbed_model": str(path)},
        "package_version": __version__,
        "alignment_in_dist": alignment,
        "seconds": round(seconds, 1),
    }
    write_json_atomic(out / "results.json", results)
    write_text_atomic(out / "report.md", render_report(rows, meta, alignment, methods, split_names, seconds))
    log(f"\nwrote {out / 'results.json'}, {out / 'report.md'} and {len(plots)} plots in {seconds:.0f} s")
    return results


def render_report(rows, meta, alignment, methods, splits, seconds) -> str:
    lines = [
        "# RoMA demo on the bundled testbed",
        "",
        f"Produced by `roma demo` (moe-roma {__version__}) in {seconds:.0f} s. Base model answers "
        f"{meta['base_train_accuracy']:.1%} of the {meta['n_train']} RoMA training items right "
        f"(successful set: {meta['n_successful']}). Scoring: {meta['scoring']} (lm-evaluation-harness `acc`).",
        "",
        markdown_table(rows, methods, splits),
        "## Manifold alignment on in_dist (first seed)",
        "",
        "`knn_overlap@5`: mean share of each item's 5 nearest neighbours in the sentence-embedding space "
        "that are also among its 5 nearest in routing space (tuned layers concatenated); chance is about "
        f"{5 / max(meta['splits'].get('in_dist', 6) - 1, 1):.3f}.",
        "",
        "| routing | knn_overlap@5 | mean routing entropy per tuned layer (nats) |",
        "|---|---|---|",
    ]
    for label, a in alignment.items():
        lines.append(f"| {label} | {a['knn_overlap@5']:.3f} | {', '.join(f'{h:.2f}' for h in a['entropy'])} |")
    lines += [
        "",
        "## Plots",
        "",
        "![training curves](training_curves.png)",
        "![expert utilisation](expert_utilisation.png)",
        "![routing PCA](routing_pca.png)",
        "",
        "## Settings",
        "",
        "```json",
        __import__("json").dumps(meta["train_config"], indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)
