"""Evaluation: our ``letter`` and ``continuation`` scoring against lm-evaluation-harness on the same requests.

OURS: ``moe_roma.scoring.letter.score_letter`` and ``moe_roma.scoring.continuation.score_continuation``
(each question's context run once, its key/value cache expanded over the choices). HARNESS:
lm-evaluation-harness's ``HFLM(pretrained=<model object>, tokenizer=...)`` and its ``loglikelihood``
on exactly the requests our scorer builds (letter: ``(prompt, " A")``, ``(prompt, " B")``, ...;
continuation: ``(context, " " + choice)``), with the same batch size, so task loading is not timed.
All four arms run interleaved in one process on the same random OLMoE-shaped model and the same
items; the medians of several repeats are reported. Both sides' log-likelihoods are compared, and
the script stops unless ``acc`` and ``acc_norm`` (continuation) and ``acc`` (letter) are identical.

The items are 4-choice questions whose context is at least 3x each continuation in tokens (the
regime of the speed goal; the script prints the smallest ratio it drew).

    PYTHONPATH=src python benchmarks/eval.py
    PYTHONPATH=src python benchmarks/eval.py --quick
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.eval
    import _common as common
except ImportError:  # pragma: no cover
    from benchmarks import _common as common

from moe_roma.data.prompts import answer_letter_tokens, letter_prompt  # noqa: E402
from moe_roma.models.inputs import encode_pairs  # noqa: E402
from moe_roma.scoring.common import first_argmax  # noqa: E402
from moe_roma.scoring.continuation import choice_lengths, continuation_requests, score_continuation  # noqa: E402
from moe_roma.scoring.letter import score_letter  # noqa: E402


def harness(model, tok, batch: int):
    """lm-evaluation-harness's HFLM around the in-memory model, and a (context, continuation) scorer."""
    import logging

    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its notes on passing a model object
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch, device="cpu")

    def loglikelihood(pairs: list[tuple[str, str]]) -> list[float]:
        reqs = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
        return [ll for ll, _ in lm.loglikelihood(reqs, disable_tqdm=True)]

    return loglikelihood


def harness_accuracy(examples, lls: list[float], normalise: bool) -> list[bool]:
    """Per item: is the harness's argmax (of the log-likelihood, or of it over len(choice)) the answer?"""
    out, k = [], 0
    for ex in examples:
        mine = lls[k : k + len(ex.choices)]
        k += len(ex.choices)
        if normalise:
            mine = [s / n for s, n in zip(mine, choice_lengths(ex))]
        out.append(first_argmax(mine) == ex.answer)  # numpy.argmax's first maximum, as the harness
    return out


def main(argv: Sequence[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--examples", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument(
        "--words", default="14,24", help="question length range in words (context = words + 4 tokens)"
    )
    ap.add_argument("--choice-words", default="1,6", help="choice length range in words")
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="tiny settings for the smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.layers, args.hidden, args.vocab, args.examples, args.batch, args.repeats = 4, 32, 512, 6, 4, 1
    common.setup(args.threads)
    lo, hi = (int(x) for x in args.words.split(","))
    clo, chi = (int(x) for x in args.choice_words.split(","))
    model = common.olmoe(args.layers, args.hidden, args.vocab)
    tok = common.word_tokenizer(args.vocab)
    examples = common.synthetic_examples(args.examples, args.vocab, (lo, hi), (clo, chi))
    letter_pairs = [
        (letter_prompt(ex), cont) for ex in examples for cont in answer_letter_tokens(len(ex.choices))
    ]
    cont_pairs = [pair for ex in examples for pair in continuation_requests(ex)]
    theirs = harness(model, tok, args.batch)
    out: dict[str, object] = {}

    def keep(name: str, fn):
        def run() -> None:
            out[name] = fn()

        return run

    bs = args.batch
    arms = {
        "letter ours": keep(
            "letter ours", lambda: score_letter(model, tok, examples, batch_size=bs, progress=False)
        ),
        "letter harness": keep("letter harness", lambda: theirs(letter_pairs)),
        "continuation ours": keep(
            "continuation ours",
            lambda: score_continuation(model, tok, examples, batch_size=bs, progress=False),
        ),
        "continuation harness": keep("continuation harness", lambda: theirs(cont_pairs)),
    }
    times = common.interleaved(arms, args.repeats)
    # The same numbers both ways: per-choice scores, flattened in request order, and the same accuracies.
    agree, accs = {}, {}
    for scoring in ("letter", "continuation"):
        items = out[f"{scoring} ours"].items
        ref = out[f"{scoring} harness"]
        agree[scoring] = max(abs(a - b) for a, b in zip([s for it in items for s in it.scores], ref))
        metrics = {"acc": ([it.correct for it in items], harness_accuracy(examples, ref, False))}
        if scoring == "continuation":
            metrics["acc_norm"] = (
                [bool(it.correct_norm) for it in items],
                harness_accuracy(examples, ref, True),
            )
        for metric, (mine, harness_says) in metrics.items():
            if mine != harness_says:
                raise SystemExit(f"{scoring} {metric} differs from lm-evaluation-harness on some items")
            accs[f"{scoring} {metric}"] = sum(mine) / len(mine)
    print(common.machine())
    print(
        f"model: OLMoE-shaped, {args.layers} layers, hidden {args.hidden}, vocab {args.vocab}, 64 experts "
        f"top-8, random fp32 weights; {args.examples} questions x 4 choices; batch size {bs} for both"
    )
    encoded = encode_pairs(tok, cont_pairs)
    n_tokens = sum(len(c) + len(x) for c, x in encoded) / len(encoded)
    ratio = min(len(c) / len(x) for c, x in encoded)
    print(
        f"continuation requests: {len(cont_pairs)} of ~{n_tokens:.0f} tokens, context >= {ratio:.1f}x the "
        f"continuation in every one; letter requests: {len(letter_pairs)}"
    )
    print("identical to lm-evaluation-harness: " + ", ".join(f"{k} {v:.4f}" for k, v in accs.items()))
    rows = []
    ratios = {}
    for scoring in ("letter", "continuation"):
        o, h = common.median(times[f"{scoring} ours"]), common.median(times[f"{scoring} harness"])
        ratios[scoring] = h / o
        rows.append(
            [
                scoring,
                f"{args.examples / o:.1f}",
                common.spread(times[f"{scoring} ours"]),
                f"{args.examples / h:.1f}",
                common.spread(times[f"{scoring} harness"]),
                f"{h / o:.2f}x",
                f"{agree[scoring]:.1e}",
            ]
        )
    print()
    print(f"examples/s, median of {args.repeats} interleaved repeats (ranges: seconds per run)")
    print(
        common.table(
            ["scoring", "ours ex/s", "ours s", "harness ex/s", "harness s", "ours speedup", "max |ll diff|"],
            rows,
        )
    )
    print()
    print(f"speedup (letter): {ratios['letter']:.2f}x")
    print(f"speedup: {ratios['continuation']:.2f}x")
    return ratios["continuation"]


if __name__ == "__main__":
    main()
