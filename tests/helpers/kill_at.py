"""Run ``roma`` in this process and signal it at an exact point: the N-th call of a function.

    python tests/helpers/kill_at.py MODULE:FUNCTION N before|after [SIGINT|SIGTERM|SIGKILL] -- roma-args...

The process sends itself the signal (SIGKILL unless named) right before (or right after) the N-th
call of ``MODULE.FUNCTION`` returns, so a test can interrupt a run at a chosen step with no sleeps
and no race: the signal lands at the same point on a quiet machine and on a loaded one. A SIGINT
or SIGTERM is handled by the run itself (the handler runs before the next Python instruction).
It exits with roma's own status if the run ends before the N-th call.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys


def main(argv: list[str]) -> int:
    target, count, when, *rest = argv
    signame = "SIGKILL" if rest[:1] == ["--"] else rest.pop(0)
    sep, *args = rest
    if sep != "--" or when not in ("before", "after") or signame not in ("SIGINT", "SIGTERM", "SIGKILL"):
        raise SystemExit(__doc__)
    signum = getattr(signal, signame)
    module_name, function_name = target.split(":")
    owner = importlib.import_module(module_name)
    *path, function_name = function_name.split(".")  # a method: MODULE:Class.method
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, function_name)
    calls = 0

    @functools.wraps(original)
    def wrapped(*a, **kw):
        nonlocal calls
        calls += 1
        if calls == int(count) and when == "before":
            os.kill(os.getpid(), signum)
        result = original(*a, **kw)
        if calls == int(count) and when == "after":
            os.kill(os.getpid(), signum)
        return result

    setattr(owner, function_name, wrapped)
    from moe_roma.cli import main as roma

    return roma(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
