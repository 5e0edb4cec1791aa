"""``roma testbed``: build the bundled tiny MoE model, export its task splits, score it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from moe_roma.io.errors import ModelError, RomaError


def _add_build(sub) -> None:
    from moe_roma.testbed import testbed_model_path
    from moe_roma.testbed.config import BuildConfig

    p = sub.add_parser(
        "build", help="generate the task suite and pre-train the tiny OLMoE testbed model",
        description="Generate the task suite, train the word-level tokenizer and pre-train the tiny "
        "OLMoE model from scratch (deterministic for a given seed, thread count and torch build).",
    )
    p.add_argument("--out", type=Path, default=testbed_model_path(),
                   help="output model folder (default: the package's bundled model folder)")
    p.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="also score the evaluation splits every N steps (slows the build)")
    # Every BuildConfig field becomes an option with the same default.
    for f in dataclasses.fields(BuildConfig):
        flag = "--" + f.name.replace("_", "-")
        p.add_argument(flag, type=type(f.default), default=f.default, dest=f.name,
                       help=f"(default: {f.default})")
    p.set_defaults(func=_run_build)


def _run_build(args: argparse.Namespace) -> int:
    from moe_roma.testbed.build import build_testbed
    from moe_roma.testbed.config import BuildConfig

    cfg = BuildConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(BuildConfig)})
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise RomaError("--steps and --batch-size must be positive")

    def log(msg: str) -> None:
        print(msg, flush=True)

    info = build_testbed(args.out, cfg, log=log, eval_every=args.eval_every)
    print(f"wrote {args.out} ({info['parameters'] / 1e6:.2f}M parameters, {info['wall_seconds']:.0f}s)")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write the task-suite splits as JSONL files",
                       description="Write each split as <out>/<split>.jsonl with keys id, task, query, "
                       "choices, gold.")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--splits", nargs="+", default=None, help="which splits (default: all but pretrain)")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from moe_roma.testbed.tasks import EVAL_SPLITS, SPLITS, build_task_suite, write_split_jsonl

    splits = args.splits or ["train", *EVAL_SPLITS]
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise RomaError(f"unknown split {bad[0]!r} (choose from {', '.join(SPLITS)})")
    suite = build_task_suite(args.seed, include_pretrain="pretrain" in splits)
    for s in splits:
        path = write_split_jsonl(suite[s], args.out / f"{s}.jsonl")
        print(f"{path}: {len(suite[s])} items")
    return 0


def _add_eval(sub) -> None:
    from moe_roma.testbed import testbed_model_path

    p = sub.add_parser("eval", help="score a model on the task-suite evaluation splits",
                       description="Continuation log-likelihood accuracy on the evaluation splits.")
    p.add_argument("--model", type=Path, default=testbed_model_path(), help="model folder")
    p.add_argument("--seed", type=int, default=0, help="task-suite seed")
    p.add_argument("--splits", nargs="+", default=None, help="which splits (default: the evaluation ones)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--per-task", action="store_true", help="also print per-family accuracy")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from moe_roma.testbed.scoring import accuracy
    from moe_roma.testbed.tasks import EVAL_SPLITS, SPLITS, build_task_suite

    splits = args.splits or list(EVAL_SPLITS)
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise RomaError(f"unknown split {bad[0]!r} (choose from {', '.join(SPLITS)})")
    if not (args.model / "config.json").is_file():
        raise ModelError(f"{args.model}: no config.json (build it with `roma testbed build`)")
    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(args.model)
    suite = build_task_suite(args.seed, include_pretrain="pretrain" in splits)
    result = {s: accuracy(model, tok, suite[s]) for s in splits}
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    for s, acc in result.items():
        print(f"{s:14s} {acc['all']:.3f}  (n={len(suite[s])})")
        if args.per_task:
            for k, v in acc.items():
                if k != "all":
                    print(f"    {k:16s} {v:.3f}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("testbed", help="the bundled tiny MoE model and task suite",
                              description="Build, export and score the bundled testbed.")
    sub = p.add_subparsers(dest="testbed_command", metavar="ACTION")
    _add_build(sub)
    _add_export(sub)
    _add_eval(sub)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
