"""``roma train``: RoMA router post-training from a routing file."""

from __future__ import annotations

import argparse

from moe_roma.io.config import add_config_arguments, config_arguments
from moe_roma.methods.roma.config import TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="post-train the routers with RoMA (or an ablation)",
        description="Train only the routers of the chosen MoE layers with task loss + lambda(t) * regulariser. "
        "Settings: defaults <- --config YAML <- options <- key=value overrides (any TrainConfig setting).",
    )
    p.add_argument("--model", required=True, help="base model: Hugging Face id or local folder")
    p.add_argument("--routing", required=True, help="routing JSON from `roma collect` (carries texts and answers)")
    p.add_argument("--out", required=True, help="output folder for the router checkpoint and metrics")
    p.add_argument("--config", default=None, help="YAML file of training settings (sections or dotted names)")
    p.add_argument("--resume", action="store_true", help="continue from the last state in --out")
    # One flag per training setting, generated from the TrainConfig fields (docs/training.md lists them).
    add_config_arguments(p, TrainConfig)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="any training setting, by name or dotted path, e.g. lam_final=0.2 or graph.k=5")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import shutil
    from pathlib import Path

    from moe_roma.io.errors import RomaError
    from moe_roma.methods.roma.config import load_train_config
    from moe_roma.methods.roma.state import STATE_NAME, load_train_state
    from moe_roma.methods.roma.trainer import RouterTrainer, maybe_init_distributed
    from moe_roma.models.loading import load_model
    from moe_roma.routing.store import load_routing_store

    config = load_train_config(args.config, args.overrides, **config_arguments(args))
    store = load_routing_store(args.routing)
    state = Path(args.out) / STATE_NAME
    if args.resume and state.is_file():
        load_train_state(state)  # a torn or foreign state fails now, before any model loading or writing
    maybe_init_distributed()
    model, tokenizer = load_model(
        args.model, dtype=config.runtime.dtype, device=config.runtime.device,
        attn_implementation=config.runtime.attn_implementation,
    )
    out = Path(args.out)
    fresh = not out.exists()
    try:
        trainer = RouterTrainer(
            model, tokenizer, store, config, out, progress=not args.no_progress, store_path=args.routing
        )
        result = trainer.train(resume=args.resume)
    except RomaError:
        # A refused run into a new folder leaves no folder behind (logs and neighbour cache included),
        # unless it saved a state to resume from.
        if fresh and int(os.environ.get("RANK", "0")) == 0 and not state.is_file():
            shutil.rmtree(out, ignore_errors=True)
        raise
    if trainer.rank == 0:
        m = result.final_metrics
        print(
            f"trained routers of layers {result.tuned_layers} for {result.steps} steps in {result.seconds:.1f} s "
            f"(task loss {m.get('task_loss', float('nan')):.4f}, manifold loss {m.get('manifold_loss') or 0:.4f}); "
            f"wrote {out}"
        )
    return 0
