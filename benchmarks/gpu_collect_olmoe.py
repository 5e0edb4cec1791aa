"""Routing collection on a GPU: batched against one example at a time, full-size OLMoE-1B-7B.

The GPU counterpart of ``benchmarks/collect.py``: the same ``collect_routing`` with batch size 1
and ``--batch``, interleaved in one process, on a randomly initialised OLMoE-1B-7B in bf16 (no
weights are needed for timing) and random-word letter prompts. Batching must not change what is
recorded: the table gives the largest routing difference and how many answers agree (bf16 sums
in another order can flip a near-tie, so a few disagreements are possible and are reported).

    PYTHONPATH=src python benchmarks/gpu_collect_olmoe.py --examples 256
    PYTHONPATH=src python benchmarks/gpu_collect_olmoe.py --quick --device cpu   # smoke test
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.gpu_collect_olmoe
    import _common as common
except ImportError:  # pragma: no cover
    from benchmarks import _common as common

from moe_roma.routing.collect import collect_routing  # noqa: E402


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--words", default="40,160", help="question length range in words")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="a tiny model and few prompts, for the smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.examples, args.batch, args.words, args.repeats = 8, 4, "5,10", 1
    common.setup(threads=4)
    acc = common.Accelerator(args.device)
    model = common.olmoe_1b_7b(args.device, torch.bfloat16, common.OLMOE_QUICK if args.quick else None)
    tok = common.word_tokenizer(model.config.vocab_size)
    lo, hi = (int(x) for x in args.words.split(","))
    examples = common.synthetic_examples(args.examples, model.config.vocab_size, (lo, hi), (1, 4))
    stores = {}

    def arm(bs: int):
        def run() -> None:
            stores[bs], _ = collect_routing(
                model, tok, examples, layers="last5", batch_size=bs, progress=False
            )

        return run

    acc.reset_peak()
    times = common.interleaved({1: arm(1), args.batch: arm(args.batch)}, args.repeats)
    one, many = stores[1], stores[args.batch]
    t1, tb = common.median(times[1]), common.median(times[args.batch])
    tokens = sum(len(tok(t)["input_ids"]) for t in one.input_texts) / len(examples)
    report = {
        "device": acc.name(),
        "torch": torch.__version__,
        "examples": args.examples,
        "mean_prompt_tokens": round(tokens, 1),
        "batch": args.batch,
        "repeats": args.repeats,
        "batch1_examples_per_second": round(args.examples / t1, 1),
        "batch1_seconds": [round(t, 3) for t in times[1]],
        f"batch{args.batch}_examples_per_second": round(args.examples / tb, 1),
        f"batch{args.batch}_seconds": [round(t, 3) for t in times[args.batch]],
        "speedup": round(t1 / tb, 2),
        "routing_max_abs_diff": float((one.routing - many.routing).abs().max()),
        "same_answers": sum(a == b for a, b in zip(one.model_answer, many.model_answer)),
        "peak_gpu_memory_gib": acc.peak_gib() and round(acc.peak_gib(), 2),
    }
    common.emit_report(report, args.out)
    print(f"speedup: {report['speedup']:.2f}x")
    return report


if __name__ == "__main__":
    main()
