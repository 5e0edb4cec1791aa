"""The target test of `roma diagnose` on 2,000 downstream testbed items, with every control, on 2 threads.

The goal (issue 24): within 3 minutes on 2 CPU cores. The routing file is the downstream testbed's
five splits (2,240 items: train, validation, in_dist, shifted, heldout_tasks) collected on its five
tuned layers with continuation scoring, and their question embeddings; neither is timed (that is
`roma collect --embed`'s work). Timed: `roma diagnose`'s target test on a random sample of 2,000 of
them, as `--gate-items 2000` runs it: the neighbour graph, the five targets (RoMA's and four
controls) and six forward passes per item (the base and one per target), batched, with the frozen
prefix computed once per item.

    PYTHONPATH=src python benchmarks/target_test.py
    PYTHONPATH=src python benchmarks/target_test.py --items 500 --batch-size 16
"""

from __future__ import annotations

import argparse
import time

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.target_test
    import _common as common
except ImportError:  # pragma: no cover
    from benchmarks import _common as common

GOAL_SECONDS = 180.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    common.setup(args.threads)
    from moe_roma.diagnose.target_test import target_test
    from moe_roma.manifold.embed import embed_texts
    from moe_roma.models.loading import load_model
    from moe_roma.routing.collect import collect_routing
    from moe_roma.testbed import load_testbed_splits, testbed_model_path

    splits = load_testbed_splits(0, testbed="downstream")
    examples = [ex for split in splits.values() for ex in split]
    model, tok = load_model(str(testbed_model_path("downstream")), dtype="float32", device="cpu")
    store, _ = collect_routing(
        model, tok, examples, layers="last5", scoring="continuation", batch_size=32, progress=False
    )
    embeddings = embed_texts(list(store.questions))
    start = time.perf_counter()
    result = target_test(
        model, tok, store, embeddings, n_items=args.items, batch_size=args.batch_size, progress=False
    )
    total = time.perf_counter() - start
    print(
        f"\n{result['n']} of {len(store)} downstream items, layers {result['layers']}, "
        f"{len(result['targets'])} targets, batch {args.batch_size}, {args.threads} threads "
        f"({common.machine()})"
    )
    print("| target | accuracy | fixed | broken |\n|---|---|---|---|")
    print(f"| own routing | {result['base']['share']:.1%} | - | - |")
    for name, t in result["targets"].items():
        print(f"| {name} | {t['accuracy']['share']:.1%} | {t['fixed']['k']} | {t['broken']['k']} |")
    print(
        f"forward passes: {result['passes']['forwards']} item passes, "
        f"{result['passes']['cost_vs_base']:.2f}x the base's compute"
    )
    print(f"| **target test total** | **{total:.1f} s** |")
    print(f"goal: {GOAL_SECONDS:.0f} s -> {'met' if total <= GOAL_SECONDS else 'NOT met'}")
    return 0 if total <= GOAL_SECONDS else 1


if __name__ == "__main__":
    raise SystemExit(main())
