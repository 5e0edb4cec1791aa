"""How far tuned routers move the routing of each evaluation split away from the base model's
(exploratory, docs/findings.md section 4): does post-training change the routing of task families it
never trained on as much as that of its own?

    R=results/compare-downstream-large/runs
    python scripts/routing_drift.py --testbed downstream $R/router_tuning/seed0 $R/roma/seed0
    python scripts/routing_drift.py --model M --data in_dist=a.jsonl --data heldout=b.jsonl ROUTERS...

For each router folder and split, at the last prompt token of the tuned layers (as `roma collect`
records it), over the split's items and those layers:
- ``tv``: mean total-variation distance between the tuned and the base routing distributions
  (0: unchanged, 1: disjoint experts);
- ``topk_changed``: share of (item, layer) pairs whose top-k expert set changed;
- the base's and the tuned model's accuracy, and how many answers changed.
Writes a Markdown table to standard output and, with ``--json``, the figures.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

import torch

from moe_roma.data.loaders import load_examples
from moe_roma.io.atomic import write_json_atomic
from moe_roma.io.errors import RomaError
from moe_roma.io.outputs import guard_output
from moe_roma.models.checkpoint import (
    apply_router_checkpoint,
    load_router_checkpoint,
    restore_routers,
    router_snapshot,
)
from moe_roma.models.discovery import discover_routers
from moe_roma.models.loading import load_model
from moe_roma.routing.collect import collect_routing
from moe_roma.routing.store import RoutingStore


def routing_drift(base: RoutingStore, tuned: RoutingStore, top_k: int) -> dict:
    """The drift of ``tuned`` from ``base`` (the same items and layers): see the module docstring."""
    if base.ids != tuned.ids or base.layers != tuned.layers:
        raise RomaError("routing_drift: the two stores must hold the same items and layers")
    tv = 0.5 * (tuned.routing - base.routing).abs().sum(-1)  # (N, L)
    top_base = base.routing.topk(top_k, dim=-1).indices.sort(-1).values
    top_tuned = tuned.routing.topk(top_k, dim=-1).indices.sort(-1).values
    changed = (top_base != top_tuned).any(-1)  # (N, L)
    return {
        "n": len(base),
        "tv": tv.mean().item(),
        "topk_changed": changed.float().mean().item(),
        "base_accuracy": sum(base.is_correct) / len(base),
        "tuned_accuracy": sum(tuned.is_correct) / len(tuned),
        "answers_changed": sum(a != b for a, b in zip(base.model_answer, tuned.model_answer)),
    }


def _splits(args: argparse.Namespace) -> tuple[str, dict[str, list]]:
    if args.testbed:
        from moe_roma.testbed import load_testbed_splits, testbed_model_path

        suite = load_testbed_splits(testbed=args.testbed)
        names = args.splits.split(",") if args.splits else ["in_dist", "shifted", "heldout_tasks"]
        return str(testbed_model_path(args.testbed)), {name: suite[name] for name in names}
    if not args.model or not args.data:
        raise RomaError("give --testbed, or --model with at least one --data SPLIT=FILE")
    splits = {}
    for spec in args.data:
        name, sep, path = spec.partition("=")
        if not sep:
            raise RomaError(f"--data {spec}: expected SPLIT=FILE")
        splits[name] = load_examples(path)
    return args.model, splits


def _table(figures: dict[str, dict[str, dict]], splits: list[str], first: str) -> str:
    lines = [
        f"| {first} | " + " | ".join(f"{s}: tv / top-k changed / acc base -> tuned" for s in splits) + " |",
        "|---" * (len(splits) + 1) + "|",
    ]
    for label, per_split in figures.items():
        cells = (
            f"{f['tv']:.3f} / {f['topk_changed']:.1%} / {f['base_accuracy']:.1%} -> {f['tuned_accuracy']:.1%}"
            for f in per_split.values()
        )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("routers", nargs="+", type=Path, help="router checkpoint folders of one base model")
    parser.add_argument("--testbed", help="a bundled testbed: its model and evaluation splits")
    parser.add_argument("--splits", help="the testbed's splits (default in_dist,shifted,heldout_tasks)")
    parser.add_argument("--model", help="the base model (without --testbed)")
    parser.add_argument("--data", action="append", help="SPLIT=FILE, repeatable (without --testbed)")
    parser.add_argument("--scoring", default="continuation", choices=("continuation", "letter"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = parser.parse_args(argv)
    try:
        model_path, splits = _splits(args)
        if args.json is not None:  # checked before any model loads, as every roma command does
            guard_output("--json", args.json, inputs={"ROUTERS": args.routers}, overwrite=args.overwrite)
        torch.manual_seed(0)
        model, tok = load_model(model_path, device="cpu")
        info = discover_routers(model)
        snapshot = router_snapshot(model, info)
        layers = list(load_router_checkpoint(args.routers[0])[0]["tuned_layers"])
        top_k = max(info.routers[layer].top_k for layer in layers)

        def routing(examples: list) -> RoutingStore:
            store, _ = collect_routing(
                model, tok, examples, layers=layers, scoring=args.scoring, progress=False, info=info
            )
            return store

        base = {name: routing(examples) for name, examples in splits.items()}
        figures: dict[str, dict[str, dict]] = {}
        for folder in args.routers:
            config = apply_router_checkpoint(model, folder)  # refuses another base model's routers
            if list(config["tuned_layers"]) != layers:
                raise RomaError(
                    f"{folder}: tunes layers {config['tuned_layers']}, {args.routers[0]} {layers}"
                )
            figures[str(folder)] = {
                name: routing_drift(base[name], routing(examples), top_k) for name, examples in splits.items()
            }
            restore_routers(model, snapshot)
    except RomaError as exc:
        print(f"routing_drift.py: {exc}", file=sys.stderr)
        return 2
    print(_table(figures, list(splits), "routers"))
    # Seed folders of one method (<method>/seed<k>) are also averaged, in a second table.
    groups: dict[str, list[dict]] = {}
    for folder, per_split in figures.items():
        if re.fullmatch(r"seed\d+", Path(folder).name):
            groups.setdefault(str(Path(folder).parent), []).append(per_split)
    if any(len(runs) > 1 for runs in groups.values()):
        means = {
            f"{method} ({len(runs)} seeds)": {
                split: {key: statistics.fmean(run[split][key] for run in runs) for key in runs[0][split]}
                for split in splits
            }
            for method, runs in groups.items()
        }
        print("\nMean over the seed folders given:\n\n" + _table(means, list(splits), "method"))
    if args.json:
        write_json_atomic(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
