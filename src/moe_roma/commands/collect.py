"""``roma collect``: record the base model's last-token routing, answers and correctness."""

from __future__ import annotations

import argparse

from moe_roma.commands import add_model_options
from moe_roma.scoring import SCORINGS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collect",
        help="record the base model's last-token routing and answers for training data",
        description="Run the base model over multiple-choice data and write the seed-001 routing JSON "
        "(plus a safetensors side-car). Correct samples form RoMA's successful set.",
    )
    p.add_argument("--model", required=True, help="Hugging Face model id or local folder")
    p.add_argument("--data", required=True, help="multiple-choice data file or folder")
    p.add_argument("--format", default=None, help="data format (default: detected)")
    p.add_argument("--out", required=True, help="routing JSON to write")
    p.add_argument("--layers", default="last5", help="last5 (default), all, firstN, or e.g. 11,12,13")
    p.add_argument("--scoring", default="letter", choices=SCORINGS)
    p.add_argument("--position", default="last", choices=["last", "first"],
                   help="prompt token whose routing is recorded (last: RoMA; first: ablation)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=1024)
    add_model_options(p)
    p.add_argument("--limit", type=int, default=None, help="use only the first N examples")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moe_roma.data.loaders import load_examples
    from moe_roma.io.errors import RomaError
    from moe_roma.models.discovery import discover_routers
    from moe_roma.models.loading import load_model
    from moe_roma.routing.collect import collect_routing
    from moe_roma.routing.store import save_routing_store

    if args.batch_size < 1:
        raise RomaError("--batch-size must be at least 1")
    examples = load_examples(args.data, format=args.format)
    if args.limit is not None:
        examples = examples[: args.limit]
    model, tokenizer = load_model(
        args.model, dtype=args.dtype, device=args.device, attn_implementation=args.attn_implementation
    )
    info = discover_routers(model)
    info.select_layers(args.layers)  # refuse a bad selection before any work
    store, summary = collect_routing(
        model, tokenizer, examples, layers=args.layers, scoring=args.scoring, batch_size=args.batch_size,
        max_length=args.max_length, progress=not args.no_progress, info=info, position=args.position,
    )  # fmt: skip
    store.meta["model"]["name_or_path"] = str(args.model)
    store.meta["data"] = str(args.data)
    save_routing_store(store, args.out)
    print(summary.line())
    print(f"wrote {args.out} ({len(store.successful)} successful of {len(store)})")
    return 0
