"""The project's own error types.

Every problem a user can fix (bad file, bad option, mismatched checkpoint) is raised as a
``RomaError``; the CLI turns it into one sentence on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

from pathlib import Path


class RomaError(Exception):
    """A problem with the user's input or environment, reported as one sentence."""


class DataError(RomaError):
    """A data, routing or checkpoint file that cannot be used.

    The message names the file, the record (when there is one) and the problem.

    >>> str(DataError("x.jsonl", "line 3", "'answer' is 7 but there are 4 choices"))
    "x.jsonl, line 3: 'answer' is 7 but there are 4 choices"
    """

    def __init__(self, path: str | Path | None, record: str | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.record = record
        self.problem = problem
        where = ", ".join(p for p in (self.path, record) if p)
        super().__init__(f"{where}: {problem}" if where else problem)


class ModelError(RomaError):
    """A model that cannot be used: missing path, no MoE routers, mismatched checkpoint."""


class Stopped(RomaError):
    """A run stopped by SIGINT or SIGTERM; the message says what was kept. Exits 128 + the signal number."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


class JobError(RomaError):
    """A problem found alike by every process of a torchrun job (mismatched arguments, a batch the world size
    does not divide): every rank stops, and only rank 0 says why, so the job prints one sentence."""


class RomaWarning(UserWarning):
    """Something the user should know that does not stop the run; the CLI prints it as one line."""


def warn(message: str) -> None:
    """A ``RomaWarning``: one line on stderr under the CLI (``roma COMMAND: warning: ...``)."""
    import warnings

    warnings.warn(message, RomaWarning, stacklevel=2)
