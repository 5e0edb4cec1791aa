"""SIGINT and SIGTERM as one exception, and sections of code they cannot cut in two.

``handle_interrupts()`` turns both signals into ``Interrupted`` (a ``BaseException``, like
``KeyboardInterrupt``, so no ``except Exception`` swallows it) for the duration of a run, and puts
the previous handlers back afterwards. Inside ``critical()`` (the renames that commit a checkpoint
or a state) a signal is held until the section ends, so a stop never lands between two files that
belong together.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_pending: list[int] = []
_depth = 0


class Interrupted(BaseException):
    """The run was stopped by SIGINT or SIGTERM."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def _handler(signum, frame) -> None:
    if _depth > 0:
        _pending.append(signum)
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def handle_interrupts() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``Interrupted`` in the main thread while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are only delivered to the main thread; nothing to install
        return
    previous = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block is done, then stop as asked."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
    if _depth == 0 and _pending:  # the block ended normally: now stop, as the signal asked
        signum = _pending[0]
        _pending.clear()
        raise Interrupted(signum)
