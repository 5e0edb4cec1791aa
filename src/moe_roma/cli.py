"""The ``roma`` command.

Each sub-command lives in its own module under ``moe_roma.commands`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking the
parsed arguments and returning an exit status. Problems the user can fix surface as
``RomaError``: one sentence on stderr, exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import sys

from moe_roma import __version__
from moe_roma.io.errors import JobError, RomaError, RomaWarning, Stopped
from moe_roma.io.interrupts import Interrupted, handle_interrupts

EXIT_USAGE = 2
# The packages whose releases change results; `roma --version` prints each one's installed version.
REPORTED_PACKAGES = ("torch", "transformers", "lm_eval", "accelerate", "sentence-transformers", "safetensors")


def environment_report() -> str:
    """moe-roma's version, the versions of the libraries that shape its numbers, and the device.

    The tested versions are the ones pinned in the repository's ``requirements/test.lock``.
    """
    import platform
    from importlib import metadata

    lines = [f"moe-roma {__version__}", f"python {platform.python_version()}"]
    for name in REPORTED_PACKAGES:
        try:
            lines.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{name} not installed")
    import torch

    if torch.cuda.is_available():
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        device = f"cuda ({torch.cuda.device_count()} x {', '.join(names)}; CUDA {torch.version.cuda})"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = "mps"
    else:
        device = "cpu (no GPU visible to torch)"
    lines.append(f"device {device}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs")
    return "\n".join(lines)


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(environment_report())
        parser.exit()


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr ("roma eval: error: argument --limit: ..."), exit 2.

    ``roma COMMAND --help`` still shows the full usage.
    """

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="roma",
        description="Routing Manifold Alignment: router-only post-training for MoE LLMs.",
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print moe-roma's version, the versions of torch, transformers, lm-eval and the "
        "other libraries that shape results, and the device, then exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import moe_roma.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"moe_roma.commands.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


@contextlib.contextmanager
def _one_line_warnings(prefix: str):
    """The project's warnings (and its loggers' warnings) as one line each: ``roma train: warning: ...``."""
    import logging
    import warnings

    package = os.path.dirname(__file__)
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, RomaWarning) or str(filename).startswith(package):
            print(f"{prefix}: warning: {message}", file=sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prefix}: warning: %(message)s"))
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("moe_roma")
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original
        logger.removeHandler(handler)
        logger.propagate = propagate


def main(argv: list[str] | None = None) -> int:
    # The project never downloads at run time; a missing local file must fail fast, not hang.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Our own bars show progress; transformers' weight-loading bars would bury a one-line error.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # `datasets` reads it when first imported
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a usage error: one line, exit 2, returned like any refusal (--help exits 0)
        if exc.code in (0, None):
            raise
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        with _one_line_warnings(f"roma {args.command}"), handle_interrupts():
            return int(args.func(args) or 0)
    except (
        Interrupted
    ) as stop:  # SIGINT/SIGTERM outside `roma train`'s own handling: atomic writes left no torn file
        print(
            f"roma {args.command}: stopped by {stop} before it finished; no output was left half-written",
            file=sys.stderr,
        )
        return stop.exit_status
    except Stopped as exc:
        print(f"roma {args.command}: {exc}", file=sys.stderr)
        return exc.exit_status
    except RomaError as exc:
        if not (isinstance(exc, JobError) and int(os.environ.get("RANK", "0") or 0) != 0):
            print(
                f"roma {args.command}: error: {exc}", file=sys.stderr
            )  # a JobError: rank 0 speaks for the job
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"roma {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `roma ... | head`: the reader left; say nothing more (outputs were written before printing).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
