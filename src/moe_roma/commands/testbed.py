"""``roma testbed``: build a bundled tiny MoE model, export its task splits, score it.

Every action takes ``--testbed downstream|in-domain`` (default ``downstream``, as everywhere); see
docs/testbed.md for what each testbed is.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from moe_roma.commands import add_overwrite_option
from moe_roma.io.errors import ModelError, RomaError
from moe_roma.io.outputs import Kind


def _add_testbed_option(p: argparse.ArgumentParser) -> None:
    from moe_roma.testbed import DEFAULT_TESTBED, TESTBEDS

    p.add_argument(
        "--testbed",
        choices=TESTBEDS,
        default=DEFAULT_TESTBED,
        help=f"which bundled testbed (default: {DEFAULT_TESTBED})",
    )


def _config_class(testbed: str):
    from moe_roma.testbed.config import BuildConfig, DownstreamBuildConfig

    return DownstreamBuildConfig if testbed == "downstream" else BuildConfig


def _add_build(sub) -> None:
    from moe_roma.io.config import add_config_flags
    from moe_roma.testbed.config import BuildConfig, DownstreamBuildConfig

    p = sub.add_parser(
        "build",
        help="generate a testbed's task suite and pre-train its tiny OLMoE model",
        description="Generate the task suite (and, for downstream, the general-text corpus), train the "
        "word-level tokenizer and pre-train the tiny OLMoE model from scratch (deterministic for a given "
        "seed, thread count and torch build). downstream also measures oracle routing. --arch picks another "
        "architecture at the same active width, --align adds routing alignment during pre-training, the "
        "--router-* options are common router-stability practices (docs/pretraining-study.md).",
    )
    _add_testbed_option(p)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output model folder (without it, --overwrite rebuilds the package's bundled model)",
    )
    add_overwrite_option(p, "a model in --out (or, without --out, the bundled one)")
    p.add_argument(
        "--eval-every",
        type=int,
        default=0,
        metavar="N",
        help="also score the evaluation splits every N steps (slows the build)",
    )
    p.add_argument("--no-oracle", action="store_true", help="downstream: skip measuring oracle routing")
    # Every setting of either testbed's build becomes a flag; only those given are passed on, so
    # each testbed keeps its own defaults.
    add_config_flags(p, {"in-domain": BuildConfig, "downstream": DownstreamBuildConfig})
    p.set_defaults(func=_run_build)


def _run_build(args: argparse.Namespace) -> int:
    from moe_roma.io.config import config_flags, settings
    from moe_roma.testbed import testbed_model_path

    cls = _config_class(args.testbed)
    values, labels = config_flags(args)
    own = {s.path for s in settings(cls)}
    foreign = sorted(set(values) - own)
    if foreign:
        raise RomaError(f"{labels[foreign[0]]} is not a setting of the {args.testbed} testbed")
    cfg = cls.from_dict(values, labels=labels)  # every setting, before anything is built
    from moe_roma.io.outputs import guard_output
    from moe_roma.models.checkpoint import MODEL_FILES

    bundled = testbed_model_path(args.testbed)
    if args.out is None and not args.overwrite:
        raise RomaError(
            f"without --out, roma testbed build would replace the bundled {args.testbed} model in {bundled}; "
            "give --out DIR (or --overwrite to rebuild the bundled model)"
        )
    kind = Kind(
        "testbed model", members=(*MODEL_FILES, "build_info.json", "metrics.jsonl"), finished=("config.json",)
    )
    output = guard_output("--out", args.out or bundled, kind, overwrite=args.overwrite)
    out = output.path

    def log(msg: str) -> None:
        print(msg, flush=True)

    # Built into a staging folder: a failed or stopped build leaves the folder as it was.
    with output.staged() as staging:
        if args.testbed == "downstream":
            from moe_roma.testbed.build import build_downstream_testbed

            info, _, _ = build_downstream_testbed(
                staging, cfg, log=log, eval_every=args.eval_every, oracle=not args.no_oracle
            )
        else:
            from moe_roma.testbed.build import build_testbed

            info = build_testbed(staging, cfg, log=log, eval_every=args.eval_every)
    print(f"wrote {out} ({info['parameters'] / 1e6:.2f}M parameters, {info['wall_seconds']:.0f}s)")
    return 0


def _splits_of(testbed: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(every split, the evaluation splits) of a testbed."""
    if testbed == "downstream":
        from moe_roma.testbed.downstream import EVAL_SPLITS, SPLITS, TRAIN_LARGE

        return ("pretrain", *SPLITS, TRAIN_LARGE), EVAL_SPLITS
    from moe_roma.testbed.tasks import EVAL_SPLITS, SPLITS

    return SPLITS, EVAL_SPLITS


def _check_splits(splits: list[str], testbed: str) -> None:
    known, _ = _splits_of(testbed)
    bad = [s for s in splits if s not in known]
    if bad:
        raise RomaError(f"unknown split {bad[0]!r} of the {testbed} testbed (choose from {', '.join(known)})")


# Splits written only when asked for by name: the corpus, and the 49k-item post-training set.
_ON_REQUEST = ("pretrain", "train_large")


def _suite(
    testbed: str, seed: int, with_pretrain: bool, splits: Sequence[str] = (), train_size: int | None = None
) -> dict:
    if testbed == "downstream":
        from moe_roma.testbed.downstream import TRAIN_LARGE, build_downstream_suite, build_train_large

        suite = build_downstream_suite(seed)
        if TRAIN_LARGE in splits:  # about 5 s, so only when asked for
            suite[TRAIN_LARGE] = build_train_large(seed, size=train_size)
        return suite
    from moe_roma.testbed.tasks import build_task_suite

    return build_task_suite(seed, include_pretrain=with_pretrain)


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write the task-suite splits as JSONL files",
        description="Write each split as <out>/<split>.jsonl with keys id, task, query, "
        "choices, gold. The downstream testbed's pretrain split is its text corpus: "
        'one {"id", "text"} line per document.',
    )
    _add_testbed_option(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--splits",
        nargs="+",
        default=None,
        help="which splits (default: all but pretrain and the downstream testbed's train_large)",
    )
    p.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="write only the first N items of train_large (the nested subsets of a size curve)",
    )
    add_overwrite_option(p, "split files in --out")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from moe_roma.testbed.tasks import write_split_jsonl

    known, evals = _splits_of(args.testbed)
    splits = args.splits or [s for s in known if s not in _ON_REQUEST]
    _check_splits(splits, args.testbed)
    if args.train_size is not None and "train_large" not in splits:
        raise RomaError("--train-size cuts the split train_large: add it to --splits")
    from moe_roma.io.outputs import guard_output

    files = [args.out / f"{s}.jsonl" for s in splits]
    guard_output(
        "--out",
        args.out,
        Kind("split folder", members=("*.jsonl",), shelf=True),
        files=files,
        overwrite=args.overwrite,
    )
    suite = _suite(args.testbed, args.seed, "pretrain" in splits, splits, args.train_size)
    for s in splits:
        if args.testbed == "downstream" and s == "pretrain":
            from moe_roma.io.atomic import atomic_path
            from moe_roma.testbed.downstream import pretrain_corpus

            docs = pretrain_corpus(args.seed)
            path = args.out / "pretrain.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
                for i, doc in enumerate(docs):
                    fh.write(
                        json.dumps({"id": f"ds-pretrain-{i:06d}", "text": doc}, ensure_ascii=False) + "\n"
                    )
            print(f"{path}: {len(docs)} documents")
            continue
        path = write_split_jsonl(suite[s], args.out / f"{s}.jsonl")
        print(f"{path}: {len(suite[s])} items")
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="score a model on the task-suite evaluation splits",
        description="Continuation log-likelihood accuracy on the evaluation splits, and "
        "optionally oracle routing (the upper bound of last-token routing changes).",
    )
    _add_testbed_option(p)
    p.add_argument(
        "--model", type=Path, default=None, help="model folder (default: the testbed's bundled model)"
    )
    p.add_argument("--seed", type=int, default=0, help="task-suite seed")
    p.add_argument("--splits", nargs="+", default=None, help="which splits (default: the evaluation ones)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--per-task", action="store_true", help="also print per-family accuracy")
    p.add_argument(
        "--oracle",
        action="store_true",
        help="also run oracle routing (moe_roma.methods.oracle) on each split",
    )
    p.add_argument("--oracle-layers", default="last5", help="layers oracle routing acts on (default: last5)")
    p.add_argument(
        "--oracle-steps", type=int, default=20, help="oracle gradient steps per item (default: 20)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from moe_roma.testbed import testbed_model_path
    from moe_roma.testbed.scoring import accuracy_by_task

    _, evals = _splits_of(args.testbed)
    splits = args.splits or list(evals)
    _check_splits(splits, args.testbed)
    if args.testbed == "downstream" and "pretrain" in splits:
        raise RomaError("the downstream pretrain split is text, not questions: it cannot be scored")
    model_dir = args.model or testbed_model_path(args.testbed)
    if not (model_dir / "config.json").is_file():
        raise ModelError(f"{model_dir}: no config.json (build it with `roma testbed build`)")
    torch.set_num_threads(args.threads)
    # The testbed is plain transformers: never run code from the folder.
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, trust_remote_code=False)
    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    suite = _suite(args.testbed, args.seed, "pretrain" in splits, splits)
    result: dict[str, dict] = {s: accuracy_by_task(model, tok, suite[s]) for s in splits}
    oracle: dict[str, dict] = {}
    if args.oracle:
        from moe_roma.models.discovery import discover_routers
        from moe_roma.testbed.build import oracle_gap

        info = discover_routers(model)
        layers = info.select_layers(args.oracle_layers)
        oracle = {s: oracle_gap(model, tok, suite[s], layers, args.oracle_steps, info) for s in splits}
    if args.json:
        json.dump({"accuracy": result, "oracle": oracle} if args.oracle else result, sys.stdout, indent=2)
        print()
        return 0
    for s, acc in result.items():
        line = f"{s:14s} {acc['all']:.3f}  (n={len(suite[s])})"
        if s in oracle:
            o = oracle[s]
            line += (
                f"  oracle {o['accuracy']:.3f} (gap {o['gap']:+.3f}, layers {o['layers']}, {o['steps']} "
                "steps)"
            )
        print(line)
        if args.per_task:
            for k, v in acc.items():
                if k != "all":
                    print(f"    {k:16s} {v:.3f}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "testbed",
        help="the bundled tiny MoE models and task suites",
        description="Build, export and score a bundled testbed (in-domain or downstream).",
    )
    sub = p.add_subparsers(dest="testbed_command", metavar="ACTION")
    _add_build(sub)
    _add_export(sub)
    _add_eval(sub)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
