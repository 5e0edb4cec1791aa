"""``roma diagnose``: will router post-training help on this model and data?

Without ``--model`` it measures the routing file alone. With ``--model`` it also runs the target
test (``moe_roma.diagnose.target_test``): the model answers with its routing set to RoMA's own
target and to controls, and that decides the verdict.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from moe_roma.commands import add_model_options, add_threads_option, at_least

if TYPE_CHECKING:
    from moe_roma.methods.roma.config import GraphConfig


def register(sub: argparse._SubParsersAction) -> None:
    from moe_roma.methods.roma.config import GraphConfig

    graph = GraphConfig()
    p = sub.add_parser(
        "diagnose",
        help="will router post-training help? measure a routing file, and with --model test RoMA's own "
        "target",
        description="Reads a routing file from `roma collect` (or another tool's, RoMA-code format) and "
        "writes report.json, report.md and pictures. With --model it also runs the target test: each item "
        "is scored with its last-token routing set to RoMA's target (its successful neighbours' kernel "
        "mean) and to controls; whether that target routes better than the item's own decides the verdict.",
    )
    _add_input_flags(p)
    _add_graph_flags(p, graph)
    _add_measure_flags(p)
    add_model_options(p)
    add_threads_option(p)
    p.set_defaults(func=run)


def _add_input_flags(p: argparse.ArgumentParser) -> None:
    """What to read and where to write: the routing file, the model, the items to test."""
    p.add_argument("--routing", required=True, help="routing JSON from `roma collect`: RoMA's training set")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace a finished report in --out")
    p.add_argument(
        "--embedder", default=None, help="sentence-transformers name or folder (default: bundled MiniLM)"
    )
    p.add_argument(
        "--model", default=None, help="the base model the routing was collected from: runs the target test"
    )
    p.add_argument(
        "--items",
        default=None,
        metavar="ROUTING",
        help="target-test the items of this second routing file (e.g. in_dist), neighbours from --routing's "
        "successful set (default: --routing's own items, never their own neighbour)",
    )
    p.add_argument(
        "--gate-items",
        type=at_least(1),
        default=None,
        metavar="N",
        help="target-test a random sample of N items",
    )
    p.add_argument(
        "--no-target-test", action="store_true", help="with --model, run only the oracle (--oracle N)"
    )


def _add_graph_flags(p: argparse.ArgumentParser, graph: GraphConfig) -> None:
    """The neighbour graph, with `roma train`'s defaults so that the test measures what training uses."""
    p.add_argument(
        "--k", type=at_least(1), default=graph.k, help=f"neighbours, as in `roma train` (default {graph.k})"
    )
    p.add_argument(
        "--sigma", type=float, default=graph.sigma, help=f"kernel width, as in training ({graph.sigma})"
    )
    p.add_argument(
        "--dedupe-threshold",
        type=float,
        default=graph.dedupe_threshold,
        help="near-duplicate cosine above which a neighbour is skipped, as in training "
        f"({graph.dedupe_threshold})",
    )
    p.add_argument("--include-self", action="store_true", help="a successful item is its own first neighbour")


def _add_measure_flags(p: argparse.ArgumentParser) -> None:
    """What to measure and how: the oracle, layers, top-k, batch size and seed."""
    p.add_argument(
        "--oracle",
        type=at_least(1),
        default=None,
        metavar="N",
        help="also run oracle routing on a random sample of N items, towards the right answer and towards a "
        "wrong one (needs --model)",
    )
    p.add_argument(
        "--layers",
        default=None,
        help="measure only these recorded layers: lastN, firstN, all or e.g. 11,12 (default: all recorded)",
    )
    p.add_argument(
        "--top-k",
        type=at_least(1),
        default=None,
        help="experts per token, for utilisation (default: the one the routing file recorded, else "
        "--model's, else 2 with a warning)",
    )
    p.add_argument(
        "--batch-size", type=at_least(1), default=32, help="items per forward pass (target test, oracle)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the cross-validation, permutations and samples"
    )
    p.add_argument("--no-progress", action="store_true")


def _check(args: argparse.Namespace) -> None:
    import math

    from moe_roma.io.errors import RomaError

    if args.model is None:
        for flag, given in (
            ("--oracle", args.oracle),
            ("--items", args.items),
            ("--gate-items", args.gate_items),
        ):
            if given is not None:
                raise RomaError(f"{flag} needs --model (the base model the routing was collected from)")
    if not (math.isfinite(args.sigma) and args.sigma > 0):
        raise RomaError(f"--sigma must be a positive number, got {args.sigma}")
    if not -1 <= args.dedupe_threshold <= 1.01:
        raise RomaError(f"--dedupe-threshold must lie in [-1, 1.01], got {args.dedupe_threshold}")
    if args.items and args.include_self:
        raise RomaError("--include-self applies to the routing file's own items, not to --items")


def run(args: argparse.Namespace) -> int:
    from moe_roma.commands import apply_threads
    from moe_roma.diagnose.run import resolve_top_k

    _check(args)
    output = _guard_out(args)
    apply_threads(args.threads)
    store, items = _stores(args)
    # The file's recorded top-k (or --top-k) is checked before any model loads; the model, loaded first
    # when given, supplies a k the file does not record and must agree with one it does.
    resolve_top_k(store, args.top_k, args.routing, warn_if_assumed=False)
    model = tokenizer = model_top_k = None
    if args.model:
        model, tokenizer = _load(args)
        model_top_k = _model_top_k(model, store, args.routing)
    report, embeddings, item_embeddings = _measure(args, store, items, model_top_k)
    if args.model:
        _test_with_model(args, report, model, tokenizer, store, embeddings, items, item_embeddings)
    _write_report(args, output, report, store)
    s, v = report["success"], report["verdict"]
    print(f"{s['n_successful']} of {s['n']} answered right. Verdict: {v['label']}. {v['why']}")
    print(f"wrote {output.path / 'report.md'}")
    return 0


def _guard_out(args: argparse.Namespace):
    """The guarded ``--out``: refused (a link, an input, a finished report) before anything is read."""
    from moe_roma.io.outputs import Kind, guard_output
    from moe_roma.io.paths import local_path
    from moe_roma.routing.store import sidecar_path

    kind = Kind("diagnose report", members=("report.json", "report.md", "*.png"), finished=("report.json",))
    inputs = {
        "--routing": [args.routing, sidecar_path(args.routing)],
        "--items": [args.items, sidecar_path(args.items)] if args.items else None,
        "--model": local_path(args.model),
        "--embedder": local_path(args.embedder),
    }
    return guard_output("--out", args.out, kind, inputs=inputs, overwrite=args.overwrite)


def _stores(args: argparse.Namespace):
    """The routing file and the ``--items`` file (or None), cut to ``--layers`` when given."""
    from moe_roma.diagnose.run import only_layers
    from moe_roma.routing.store import load_routing_store

    store = load_routing_store(args.routing)
    items = load_routing_store(args.items) if args.items else None
    if args.layers:
        store = only_layers(store, args.layers, args.routing)
        items = only_layers(items, args.layers, args.items) if items is not None else None
    return store, items


def _measure(args: argparse.Namespace, store, items, model_top_k):
    """The routing file's measures, and the question embeddings the target test and maps need."""
    from moe_roma.diagnose.run import diagnose_routing, question_embeddings
    from moe_roma.io.errors import RomaError

    try:
        report = diagnose_routing(
            store,
            embedder=args.embedder,
            top_k=args.top_k,
            seed=args.seed,
            log=print,
            model_top_k=model_top_k,
            path=args.routing,
        )
        embeddings = report.get("_embeddings")
        if embeddings is None and args.model and not args.no_target_test:
            embeddings = question_embeddings(store, args.embedder, print)
        item_embeddings = question_embeddings(items, args.embedder, print) if items is not None else None
    except OSError as exc:  # an embedder that cannot be loaded
        raise RomaError(f"embedder {args.embedder or 'all-MiniLM-L6-v2'} cannot be loaded: {exc}") from None
    return report, embeddings, item_embeddings


def _test_with_model(
    args: argparse.Namespace, report: dict, model, tokenizer, store, embeddings, items, item_embeddings
) -> None:
    """Into ``report``: the target test, the oracle probe (``--oracle``) and the verdict."""
    from moe_roma.diagnose.verdict import verdict

    if not args.no_target_test and store.successful:  # without successful items there is no target
        report["target_test"] = _target_test(
            args, model, tokenizer, store, embeddings, items, item_embeddings
        )
    if args.oracle:
        from moe_roma.diagnose.oracle_probe import oracle_headroom

        report["oracle"] = oracle_headroom(
            model,
            tokenizer,
            items if items is not None else store,
            args.oracle,
            seed=args.seed,
            embeddings=item_embeddings if items is not None else embeddings,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            log=print,
        )
    report["verdict"] = verdict(report)


def _write_report(args: argparse.Namespace, output, report: dict, store) -> None:
    """report.json, report.md and the pictures, staged so that every file lands together or none does."""
    from moe_roma.io.atomic import write_json_atomic, write_text_atomic
    from moe_roma.io.outputs import naming
    from moe_roma.report.diagnose import diagnose_markdown, plot_layer_alignment, plot_maps, plot_target_test

    embeddings = report.pop("_embeddings", None)
    with output.staged() as out:  # every file lands together, never through a link, or none does
        if embeddings is not None:
            routing = store.routing.float().numpy()
            with naming(output.path / "maps.png"):
                plot_maps(routing, embeddings, list(store.tasks), list(store.is_correct), out / "maps.png")
            with naming(output.path / "layer_alignment.png"):
                plot_layer_alignment(report, out / "layer_alignment.png")
        if "target_test" in report:
            with naming(output.path / "target_test.png"):
                plot_target_test(report["target_test"], out / "target_test.png")
        write_json_atomic(out / "report.json", report)
        write_text_atomic(out / "report.md", diagnose_markdown(report, str(args.routing)))


def _load(args: argparse.Namespace):
    from moe_roma.models.loading import load_model

    return load_model(
        args.model,
        dtype=args.dtype,
        device=args.device,
        attn_implementation=args.attn_implementation,
        device_map=args.device_map,
        trust_remote_code=args.trust_remote_code,
    )


def _model_top_k(model, store, path) -> int:
    """The model's experts per token in the file's layers (as `roma collect` records it); a file whose
    layers are not the model's MoE layers is refused here, naming it."""
    from moe_roma.io.errors import RomaError
    from moe_roma.models.discovery import discover_routers

    info = discover_routers(model)
    missing = [layer for layer in store.layers if layer not in info.routers]
    if missing:
        raise RomaError(
            f"{path}: layers {missing} are not MoE layers of --model {info.architecture} (its MoE layers: "
            f"{info.moe_layers}); was this routing recorded with another model?"
        )
    return max(info.routers[layer].top_k for layer in store.layers)


def _target_test(args, model, tokenizer, store, embeddings, items, item_embeddings) -> dict:
    from moe_roma.diagnose.target_test import target_test
    from moe_roma.manifold.graph import NeighbourSearch
    from moe_roma.report.diagnose import target_table

    graph = NeighbourSearch(
        k=args.k, sigma=args.sigma, dedupe_threshold=args.dedupe_threshold, include_self=args.include_self
    )
    print(
        f"target test: {args.gate_items or len(items if items is not None else store)} items, "
        f"neighbours among {len(store.successful)} successful items (k {args.k}, sigma {args.sigma})"
    )
    result = target_test(
        model,
        tokenizer,
        store,
        embeddings,
        items=items,
        item_embeddings=item_embeddings,
        graph=graph,
        n_items=args.gate_items,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    result["items"] = str(args.items) if items is not None else "the routing file's own items"
    print(target_table(result))
    return result
