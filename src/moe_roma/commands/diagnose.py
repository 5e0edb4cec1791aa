"""``roma diagnose``: will router post-training help on this model and data? One collection pass tells."""

from __future__ import annotations

import argparse

from moe_roma.commands import at_least


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diagnose",
        help="measure a routing file: success, routing-embedding alignment, whether routing decides correctness",
        description="Reads a routing file from `roma collect` (or another tool's, seed-001 format) and writes "
        "report.json, report.md and two pictures: routing and embedding maps, per-layer alignment.",
    )
    p.add_argument("--routing", required=True, help="routing JSON from `roma collect`")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace a finished report in --out")
    p.add_argument("--embedder", default=None, help="sentence-transformers name or folder (default: bundled MiniLM)")
    p.add_argument("--oracle", type=int, default=None, metavar="N",
                   help="also run oracle routing on a random sample of N items (needs --model)")
    p.add_argument("--model", default=None, help="the base model the routing was collected from (for --oracle)")
    p.add_argument("--layers", default=None,
                   help="measure only these recorded layers: lastN, firstN, all or e.g. 11,12 (default: all recorded)")
    p.add_argument("--top-k", type=at_least(1), default=None, help="experts per token, for utilisation (default: 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the cross-validation, permutations and sample")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moe_roma.diagnose.run import diagnose_routing, only_layers
    from moe_roma.diagnose.verdict import verdict
    from moe_roma.io.atomic import write_json_atomic, write_text_atomic
    from moe_roma.io.errors import RomaError
    from moe_roma.report.diagnose import diagnose_markdown, plot_layer_alignment, plot_maps
    from moe_roma.routing.store import load_routing_store

    if args.oracle is not None and (args.oracle < 1 or not args.model):
        raise RomaError("--oracle N needs N >= 1 and --model")
    from moe_roma.io.outputs import Kind, guard_output
    from moe_roma.io.paths import local_path
    from moe_roma.routing.store import sidecar_path

    kind = Kind("diagnose report", members=("report.json", "report.md", "*.png"), finished=("report.json",))
    inputs = {"--routing": [args.routing, sidecar_path(args.routing)], "--model": local_path(args.model),
              "--embedder": local_path(args.embedder)}
    output = guard_output("--out", args.out, kind, inputs=inputs, overwrite=args.overwrite)
    store = load_routing_store(args.routing)
    if args.layers:
        store = only_layers(store, args.layers, args.routing)
    try:
        report = diagnose_routing(store, embedder=args.embedder, top_k=args.top_k, seed=args.seed, log=print)
    except OSError as exc:  # an embedder that cannot be loaded
        raise RomaError(f"embedder {args.embedder or 'all-MiniLM-L6-v2'} cannot be loaded: {exc}") from None
    if args.oracle:
        report["oracle"] = _oracle_headroom(args, store, embeddings=report.get("_embeddings"))
        report["verdict"] = verdict(report)  # the oracle's direction is one of its drivers
    embeddings = report.pop("_embeddings", None)
    with output.staged() as out:  # every file lands together, never through a link, or none does
        if embeddings is not None:
            plot_maps(store.routing.float().numpy(), embeddings, list(store.tasks), list(store.is_correct), out / "maps.png")
            plot_layer_alignment(report, out / "layer_alignment.png")
        write_json_atomic(out / "report.json", report)
        write_text_atomic(out / "report.md", diagnose_markdown(report, str(args.routing)))
    out = output.path
    s, v = report["success"], report["verdict"]
    print(f"{s['n_successful']} of {s['n']} answered right. Verdict: {v['label']}. {v['why']}")
    print(f"wrote {out / 'report.md'}")
    return 0


def _oracle_headroom(args: argparse.Namespace, store, embeddings=None) -> dict:
    import torch

    from moe_roma.diagnose.measures import oracle_direction
    from moe_roma.methods.oracle import oracle_routing
    from moe_roma.models.loading import load_model

    model, tokenizer = load_model(args.model)
    n = min(args.oracle, len(store))
    pick = sorted(torch.randperm(len(store), generator=torch.Generator().manual_seed(args.seed))[:n].tolist())
    result = oracle_routing(model, tokenizer, store.subset(pick), progress=False)
    out = {"n": n, "accuracy": result.accuracy, "base_accuracy": result.base_accuracy, "gap": result.gap,
           "layers": result.layers}  # fmt: skip
    if embeddings is not None:
        # The oracle's routing for the sampled items, in the store's layer order, over the base routing.
        oracle = store.routing.float().clone()
        cols = [list(store.layers).index(x) for x in result.layers]
        oracle[torch.tensor(pick)[:, None], torch.tensor(cols)[None, :]] = result.routing.float()
        fixed = [i for i, before, after in zip(pick, result.correct_before, result.correct_after) if after and not before]
        out["direction"] = oracle_direction(embeddings, store.routing.float(), oracle, store.is_correct, fixed,
                                            seed=args.seed)  # fmt: skip
    return out
