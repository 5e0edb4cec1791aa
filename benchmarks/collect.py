"""Routing collection: batched (``collect_routing`` with batch_size 32) against one example at a time.

Both arms run ``moe_roma.routing.collect.collect_routing`` on the same random OLMoE-shaped model
and the same letter prompts, interleaved in one process; the table gives the median examples/s of
several repeats, for each model width asked for (batching amortises the per-forward overhead,
so its gain depends on how much compute each token costs). The two stores are also compared:
left padding with explicit positions must not change the routing or the answers.

    PYTHONPATH=src python benchmarks/collect.py
    PYTHONPATH=src python benchmarks/collect.py --quick
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.collect
    import _common as common
except ImportError:  # pragma: no cover
    from benchmarks import _common as common

from moe_roma.routing.collect import collect_routing  # noqa: E402


def run_width(hidden: int, args: argparse.Namespace) -> dict:
    lo, hi = (int(x) for x in args.words.split(","))
    model = common.olmoe(args.layers, hidden, args.vocab)
    if args.experts:
        model.set_experts_implementation(args.experts)
    tok = common.word_tokenizer(args.vocab)
    examples = common.synthetic_examples(args.examples, args.vocab, (lo, hi), (1, 4))
    stores = {}

    def arm(bs: int):
        def run() -> None:
            stores[bs], _ = collect_routing(
                model, tok, examples, layers="last5", batch_size=bs, progress=False
            )

        return run

    times = common.interleaved({1: arm(1), args.batch: arm(args.batch)}, args.repeats)
    one, many = stores[1], stores[args.batch]
    return {
        "hidden": hidden,
        "times": times,
        "diff": float((one.routing - many.routing).abs().max()),
        "differing": int(((one.routing - many.routing).abs().amax(dim=(1, 2)) > 1e-5).sum()),
        "same": sum(a == b for a, b in zip(one.model_answer, many.model_answer)),
        "tokens": sum(len(tok(t)["input_ids"]) for t in one.input_texts) / len(examples),
    }


def main(argv: Sequence[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--hidden", default="32,128", help="model widths to run, comma-separated")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--examples", type=int, default=128, help="prompts per run (128: four batches of 32)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--words", default="8,24", help="question length range in words")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--experts",
        default=None,
        help="transformers experts implementation: grouped_mm (default), eager, batched_mm",
    )
    ap.add_argument("--quick", action="store_true", help="tiny settings for the smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.layers, args.hidden, args.vocab, args.examples, args.batch, args.repeats = 6, "32", 512, 8, 4, 1
    common.setup(args.threads)
    results = [run_width(int(h), args) for h in args.hidden.split(",")]
    print(common.machine())
    print(
        f"model: OLMoE-shaped, {args.layers} layers, vocab {args.vocab}, 64 experts top-8, random fp32 "
        f"weights; {args.examples} letter prompts (4 choices) of ~{results[0]['tokens']:.0f} tokens; routing "
        "of the last 5 layers"
    )
    rows = []
    for r in results:
        t = r["times"]
        one, many = common.median(t[1]), common.median(t[args.batch])
        rows.append(
            [
                f"h{r['hidden']}",
                f"{args.examples / one:.1f}",
                common.spread(t[1]),
                f"{args.examples / many:.1f}",
                common.spread(t[args.batch]),
                f"{one / many:.2f}x",
                f"{r['diff']:.1e}",
                str(r["differing"]),
                f"{r['same']}/{args.examples}",
            ]
        )
    print()
    print(f"examples/s, median of {args.repeats} interleaved repeats (ranges: seconds per run)")
    print(
        common.table(
            [
                "width",
                "batch 1 ex/s",
                "batch 1 s",
                f"batch {args.batch} ex/s",
                f"batch {args.batch} s",
                "speedup",
                "routing max|diff|",
                "prompts > 1e-5",
                "same answers",
            ],
            rows,
        )
    )
    speedups = [common.median(r["times"][1]) / common.median(r["times"][args.batch]) for r in results]
    print()
    for r, x in zip(results, speedups):
        print(f"speedup at hidden {r['hidden']}: {x:.2f}x")
    print(f"speedup: {speedups[0]:.2f}x")
    return speedups[0]


if __name__ == "__main__":
    main()
