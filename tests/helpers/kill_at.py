"""Run ``roma`` in this process and SIGKILL it at an exact point: the N-th call of a function.

    python tests/helpers/kill_at.py MODULE:FUNCTION N before|after -- roma-args...

The process kills itself right before (or right after) the N-th call of ``MODULE.FUNCTION``
returns, so a test can interrupt a run at a chosen step with no sleeps and no race: the kill
lands at the same point on a quiet machine and on a loaded one. It exits 0 if the run ends
before the N-th call (the test then sees that no kill happened).
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys


def main(argv: list[str]) -> int:
    target, count, when, sep, *args = argv
    if sep != "--" or when not in ("before", "after"):
        raise SystemExit(__doc__)
    module_name, function_name = target.split(":")
    module = importlib.import_module(module_name)
    original = getattr(module, function_name)
    calls = 0

    @functools.wraps(original)
    def wrapped(*a, **kw):
        nonlocal calls
        calls += 1
        if calls == int(count) and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*a, **kw)
        if calls == int(count) and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(module, function_name, wrapped)
    from moe_roma.cli import main as roma

    return roma(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
