"""Start the processes of a torchrun job by hand: torchrun's environment contract (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT), but each process's exit status and stderr stay apart, and
each rank may get its own command line (to test mismatched arguments or a rank that dies)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

KILL_AT = Path(__file__).parent / "kill_at.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun() -> str | None:
    return shutil.which("torchrun", path=os.path.dirname(sys.executable))


def base_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run_ranks(argvs: list[list[str]], timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Run ``python ARGV`` once per rank (``argvs[r]`` for rank r) as one job; returns each rank's outcome."""
    port = free_port()
    procs = []
    for rank, argv in enumerate(argvs):
        env = {
            **base_env(),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(len(argvs)),
            "LOCAL_WORLD_SIZE": str(len(argvs)),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def roma(*args: str) -> list[str]:
    return ["-m", "moe_roma.cli", *args]


def roma_killed_at(target: str, count: int, when: str, *args: str) -> list[str]:
    """``roma ARGS`` that SIGKILLs itself at the ``count``-th call of ``target`` (see helpers/kill_at.py)."""
    return [str(KILL_AT), target, str(count), when, "--", *args]
