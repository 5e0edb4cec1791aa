"""Sub-commands of ``roma``: one module each, discovered by ``moe_roma.cli``."""

from __future__ import annotations

import argparse

DTYPES = ["auto", "float32", "bfloat16", "float16"]


def add_model_options(p: argparse.ArgumentParser, dtype_default: str | None = "auto") -> None:
    """``--dtype``, ``--device`` and ``--attn-implementation``: how every command loads a model."""
    p.add_argument("--dtype", default=dtype_default, choices=DTYPES)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument(
        "--device-map",
        dest="device_map",
        default=None,
        choices=["auto"],
        help="auto: spread the model over every visible GPU in this one process (accelerate); for "
        "a model too large for one GPU without torchrun (docs/scaling.md)",
    )
    p.add_argument(
        "--attn-implementation",
        dest="attn_implementation",
        default=None,
        help="transformers attention kernel: sdpa, flash_attention_2, eager ... (default: transformers' "
        "choice)",
    )
    add_trust_remote_code_option(p)


def add_trust_remote_code_option(p: argparse.ArgumentParser) -> None:
    """``--trust-remote-code``: without it no Python code from a model folder is run (one is refused)."""
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let a model folder that needs its own Python code (auto_map in config.json) run it; only for "
        "folders you trust",
    )


def at_least(minimum: int):
    """An argparse ``type``: an integer of at least ``minimum`` (the error names the option and the value)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def default_threads() -> int:
    """Torch CPU threads when ``--threads`` is not given: ``OMP_NUM_THREADS`` when it is set, else half
    the CPUs this process may use, 1 to 8.

    Torch's own default (every core) was measured 17-29x slower than one thread for ``roma eval``
    when another job shares the cores: the threads wait for each other's cores. Half the cores leaves
    room for another job and for the data loading; on a GPU the CPU threads matter little.
    """
    import os

    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        return int(omp)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus // 2))


def add_distributed_options(p: argparse.ArgumentParser, shard: bool = False) -> None:
    """``--dist-timeout`` (and ``--shard`` for training): how a command runs under torchrun."""
    if shard:
        p.add_argument(
            "--shard",
            default="none",
            choices=["none", "fsdp"],
            help="under torchrun: none keeps a whole model on every process (data parallel, the default); "
            "fsdp shards every decoder layer's frozen weights over the processes with FSDP2, for models "
            "that do not fit on one device (docs/scaling.md)",
        )
    p.add_argument(
        "--dist-timeout",
        type=at_least(1),
        default=1800,
        metavar="SECONDS",
        help="under torchrun: how long a process waits for the others in a collective before the job "
        "stops with an error (a process that dies is noticed at once)",
    )


def distributed_settings(args: argparse.Namespace) -> dict:
    """The parsed arguments all processes of a torchrun job must share (``distributed.group.agree``)."""
    return {k: v for k, v in vars(args).items() if k != "func"}


def add_threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=at_least(1),
        default=None,
        metavar="N",
        help="torch CPU threads (default: $OMP_NUM_THREADS if set, else half the CPUs this process may "
        "use, at most 8; 1 is fastest for the small testbed model on a busy machine)",
    )


def apply_threads(threads: int | None) -> int:
    """Set torch's CPU threads (``--threads``, else ``default_threads()``); returns the number set."""
    import torch

    n = threads if threads is not None else default_threads()
    torch.set_num_threads(n)
    return n


def add_data_source_options(p: argparse.ArgumentParser) -> None:
    """``--preset`` and the ``--*-field`` options: how rows of a Hugging Face dataset, parquet, arrow
    or JSON file become multiple-choice examples (docs/data-formats.md)."""
    g = p.add_argument_group(
        "Hugging Face datasets (--data hf:NAME[:CONFIG][:SPLIT], .parquet, .arrow, .json)"
    )
    g.add_argument(
        "--preset",
        default=None,
        help="column mapping of a known dataset (sciq, arc, mmlu, ...; `roma data presets` lists them; "
        "default: detected from the columns)",
    )
    g.add_argument("--question-field", default=None, metavar="COLUMN", help="column holding the question")
    g.add_argument(
        "--choices-field",
        default=None,
        metavar="COLUMN[,COLUMN...]",
        help="column holding the list of choices, or several columns, one choice each",
    )
    g.add_argument(
        "--answer-field",
        default=None,
        metavar="COLUMN",
        help="column holding the answer: 0-based index, letter, choice label or the choice's text",
    )
    g.add_argument(
        "--context-field",
        default=None,
        metavar="COLUMN",
        help="column with a passage to put before the question (optional)",
    )


def data_source_options(args: argparse.Namespace) -> dict:
    """``preset`` and ``fields`` for ``load_examples`` from the options of ``add_data_source_options``."""
    from moe_roma.data.presets import FieldMap
    from moe_roma.io.errors import RomaError

    names = {
        "--question-field": args.question_field,
        "--choices-field": args.choices_field,
        "--answer-field": args.answer_field,
    }
    given = [k for k, v in names.items() if v]
    fields = None
    if given or args.context_field:
        missing = [k for k, v in names.items() if not v]
        if missing:
            raise RomaError(
                f"{', '.join(given or ['--context-field'])} needs {' and '.join(missing)} too: a column "
                "mapping names the question, the choices and the answer"
            )
        if args.preset:
            raise RomaError("--preset and the --*-field options both say how to read the columns; use one")
        fields = FieldMap(args.question_field, args.choices_field, args.answer_field, args.context_field)
    return {"preset": args.preset, "fields": fields}


def add_report_to_option(p: argparse.ArgumentParser) -> None:
    """``--report-to``: trackers that get every ``metrics.jsonl`` record, the config and the final figures."""
    # Repeatable and comma-separated rather than nargs="+", which would swallow `roma train`'s
    # key=value overrides.
    p.add_argument(
        "--report-to",
        action="append",
        default=[],
        metavar="TRACKER[,TRACKER]",
        help="none (default), tensorboard, wandb, mlflow; several as tensorboard,wandb or by repeating the "
        "option (pip install 'moe-roma[tracking]'); W&B honours WANDB_MODE=offline and WANDB_PROJECT, MLflow "
        "MLFLOW_TRACKING_URI",
    )


def add_template_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--template",
        default=None,
        type=template_text,
        help="prompt template with {question} (and {choices}: the lettered choices, one per line; "
        "letter scoring needs it). \\n and \\t are read as a newline and a tab, \\\\ as a backslash",
    )


def template_text(text: str) -> str:
    r"""A template as typed on the command line: ``\n``, ``\t``, ``\\`` become a newline, a tab, a backslash.

    >>> template_text(r"Question: {question}\nAnswer:")
    'Question: {question}\nAnswer:'
    """
    import re

    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


def add_overwrite_option(p: argparse.ArgumentParser, what: str = "the output") -> None:
    """``--overwrite``: replace a finished result; without it ``io.outputs.guard_output`` refuses one."""
    p.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace {what} if it already exists (the old one stays until the new one is complete)",
    )
