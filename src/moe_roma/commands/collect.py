"""``roma collect``: record the base model's last-token routing, answers and correctness."""

from __future__ import annotations

import argparse

from moe_roma.commands import (
    add_data_source_options,
    add_distributed_options,
    add_model_options,
    add_overwrite_option,
    add_template_option,
    add_threads_option,
    at_least,
)
from moe_roma.scoring import SCORINGS, TRAINING_SCORING


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collect",
        help="record the base model's last-token routing and answers for training data",
        description="Run the base model over multiple-choice data and write the RoMA-code routing JSON "
        "(plus a safetensors side-car). Correct samples form RoMA's successful set.",
    )
    p.add_argument("--model", required=True, help="Hugging Face model id or local folder")
    p.add_argument(
        "--data",
        required=True,
        help="multiple-choice data: a file or folder, hf:NAME[:CONFIG][:SPLIT], or a parquet/arrow file",
    )
    p.add_argument("--format", default=None, help="data format (default: detected)")
    add_data_source_options(p)
    p.add_argument("--out", required=True, help="routing JSON to write")
    add_overwrite_option(p, "the routing file and its side-car")
    p.add_argument("--layers", default="last5", help="last5 (default), all, firstN, or e.g. 11,12,13")
    p.add_argument(
        "--scoring",
        default=TRAINING_SCORING,
        choices=SCORINGS,
        help="letter: the answer letter's next-token logit; continuation: the choices' log-likelihoods "
        "(what `roma train` then uses as its task loss)",
    )
    add_template_option(p)
    p.add_argument(
        "--position",
        default="last",
        choices=["last", "first"],
        help="prompt token whose routing is recorded (last: RoMA; first: ablation)",
    )
    p.add_argument("--batch-size", type=at_least(1), default=16)
    p.add_argument(
        "--max-length",
        type=at_least(1),
        default=None,
        help="longest prompt in tokens; longer ones keep their last tokens (default: the model's context)",
    )
    add_model_options(p)
    add_threads_option(p)
    add_distributed_options(p)
    p.add_argument(
        "--embed",
        nargs="?",
        const="all-MiniLM-L6-v2",
        default=None,
        metavar="EMBEDDER",
        help="also embed the questions (default embedder: the bundled all-MiniLM-L6-v2) into the side-car, "
        "where roma diagnose finds them: embed once where the model runs, diagnose anywhere",
    )
    p.add_argument("--limit", type=at_least(1), default=None, help="use only the first N examples")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moe_roma.commands import apply_threads, distributed_settings
    from moe_roma.distributed.group import job

    apply_threads(args.threads)
    with job(args.dist_timeout, distributed_settings(args)) as (rank, world):
        return _run(args, rank, world)


def _run(args: argparse.Namespace, rank: int, world: int) -> int:
    """Collect on this process's share of the examples (all without torchrun); rank 0 writes the file."""
    from moe_roma.distributed.parallel import collect_routing_parallel
    from moe_roma.io.outputs import guard_output
    from moe_roma.io.paths import local_path
    from moe_roma.models.discovery import discover_routers
    from moe_roma.routing.store import save_routing_store, sidecar_path
    from moe_roma.scoring.checks import warn_if_near_chance, warn_on_context, warn_on_unknown_tokens
    from moe_roma.scoring.common import context_length

    inputs = {"--data": args.data, "--model": local_path(args.model)}
    guard_output("--out", args.out, inputs=inputs, files=[sidecar_path(args.out)], overwrite=args.overwrite)
    examples = _examples(args)
    model, tokenizer = _load(args, world)
    info = discover_routers(model)
    info.select_layers(args.layers)  # refuse a bad selection before any work
    context = context_length(model, tokenizer)
    max_length = args.max_length or context
    warn_on_context(args.max_length, context)
    warn_on_unknown_tokens(tokenizer, examples)
    store, summary = collect_routing_parallel(
        model,
        tokenizer,
        examples,
        layers=args.layers,
        scoring=args.scoring,
        batch_size=args.batch_size,
        max_length=max_length,
        template=args.template,
        progress=not args.no_progress,
        info=info,
        position=args.position,
    )
    store.meta["model"]["name_or_path"] = str(args.model)
    store.meta["data"] = str(args.data)
    if rank != 0:
        return 0
    if args.embed is not None:
        _embed(store, args.embed, progress=not args.no_progress)
    save_routing_store(store, args.out)
    print(summary.line())
    print(f"wrote {args.out} ({len(store.successful)} successful of {len(store)})")
    warn_if_near_chance(store.is_correct, [len(ex.choices) for ex in examples], args.scoring, "base accuracy")
    return 0


def _examples(args: argparse.Namespace) -> list:
    """The examples to collect on (``--limit`` first ones), their template checked before the model loads."""
    from moe_roma.commands import data_source_options
    from moe_roma.data.loaders import load_examples
    from moe_roma.eval.evaluate import check_template

    examples = load_examples(args.data, format=args.format, **data_source_options(args))
    if args.limit is not None:
        examples = examples[: args.limit]
    check_template(args.template, args.scoring, examples[0])
    return examples


def _load(args: argparse.Namespace, world: int):
    """The model and tokenizer on this process's device."""
    from moe_roma.distributed.fsdp import load_model_on_rank

    return load_model_on_rank(
        args.model,
        world,
        dtype=args.dtype,
        device=args.device,
        attn_implementation=args.attn_implementation,
        device_map=args.device_map,
        trust_remote_code=args.trust_remote_code,
    )


def _embed(store, embedder: str, progress: bool) -> None:
    """Question embeddings into the store's side-car: embed once where the model runs, diagnose anywhere."""
    import torch

    from moe_roma.manifold.embed import embed_texts
    from moe_roma.manifold.graph import embedding_text

    texts = [embedding_text(q, x) for q, x in zip(store.questions, store.input_texts)]
    store.embeddings = torch.from_numpy(embed_texts(texts, embedder, progress=progress))
    store.meta["embedder"] = embedder
