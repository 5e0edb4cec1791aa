"""The process group of a ``torchrun`` job: joining it with a timeout, agreeing across ranks, gathering.

A job is launched by torchrun (or ``accelerate launch``), which sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address in the environment. Every collective runs under the
group's timeout, so a rank that died or hangs stops the others with one sentence instead of
leaving them waiting forever.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from datetime import timedelta

import torch
import torch.distributed as dist

from moe_roma.io.errors import JobError, RomaError

# Long enough for a rank to load its part of a 600B model before the first collective; a dead rank is
# normally seen at once (its sockets close), so the timeout only bounds a rank that hangs.
DEFAULT_TIMEOUT_S = 1800


def launched() -> bool:
    """True when this process is one of several started by torchrun (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def world() -> tuple[int, int]:
    """(rank, world size) of the joined group; (0, 1) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_device() -> torch.device:
    """The accelerator of this rank (``cuda:LOCAL_RANK``), or the CPU when there is none."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0") or 0))
    return torch.device("cpu")


def init_group(timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Join the group torchrun describes (NCCL on GPUs, gloo on CPU); False when not launched by torchrun."""
    if not launched() or not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    device = local_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s)
        )
    except (RuntimeError, ValueError) as exc:
        raise RomaError(f"cannot join the torchrun job's process group ({_first_line(exc)})") from None
    return True


def close_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    # NCCL moves only accelerator tensors; gloo only host ones.
    return local_device() if dist.get_backend() == "nccl" else torch.device("cpu")


def gather_bytes(data: bytes) -> list[bytes]:
    """Every rank's ``data``, in rank order, on every rank (sizes may differ)."""
    _, size = world()
    if size == 1:
        return [data]
    dev = _comm_device()
    n = torch.tensor([len(data)], dtype=torch.long, device=dev)
    sizes = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(sizes, n)
    longest = max(int(s) for s in sizes)
    buf = torch.zeros(longest, dtype=torch.uint8, device=dev)
    if data:
        buf[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev)
    parts = [torch.zeros_like(buf) for _ in range(size)]
    dist.all_gather(parts, buf)
    return [bytes(p[: int(s)].cpu().numpy().tobytes()) for p, s in zip(parts, sizes)]


def gather_json(obj: object) -> list:
    """Every rank's JSON-able ``obj`` in rank order (JSON on the wire: nothing is unpickled)."""
    return [
        json.loads(b.decode("utf-8")) for b in gather_bytes(json.dumps(obj, allow_nan=True).encode("utf-8"))
    ]


def gather_rows(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's tensor (same trailing shape and dtype, any number of rows), in rank order, on the CPU."""
    _, size = world()
    if size == 1:
        return [t.cpu()]
    dev = _comm_device()
    n = torch.tensor([t.shape[0]], dtype=torch.long, device=dev)
    sizes = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(sizes, n)
    longest = max(int(s) for s in sizes)
    buf = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=dev)
    buf[: t.shape[0]] = t.to(dev)
    parts = [torch.zeros_like(buf) for _ in range(size)]
    dist.all_gather(parts, buf)
    return [p[: int(s)].cpu() for p, s in zip(parts, sizes)]


def block(n: int, rank: int, size: int) -> range:
    """The contiguous share of ``n`` items that ``rank`` of ``size`` handles (first ranks take one more)."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def agree(settings: dict, what: str = "arguments") -> None:
    """Refuse a job whose ranks were started with different ``settings`` (a JSON-able dict), naming one."""
    _, size = world()
    if size == 1:
        return
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    digests = gather_json(digest)
    if len(set(digests)) == 1:
        return
    every = gather_json(json.loads(json.dumps(settings, default=str)))
    for rank, theirs in enumerate(every):
        if theirs == every[0]:
            continue
        key = next(k for k in sorted({*theirs, *every[0]}) if theirs.get(k) != every[0].get(k))
        raise JobError(
            f"the processes of this torchrun job were started with different {what}: {_option(key)} is "
            f"{every[0].get(key)!r} on rank 0 but {theirs.get(key)!r} on rank {rank}; start every rank with "
            "the same command"
        )


def check_divides(batch_size: int, name: str = "batch_size") -> None:
    """Every rank takes the same share of a global batch: refuse a world size that does not divide it."""
    _, size = world()
    if batch_size % size:
        raise JobError(
            f"{name} {batch_size} is not divisible by the {size} processes of this torchrun job; choose a "
            f"{name} that is a multiple of {size} (it is the global batch, split evenly across processes)"
        )


def check_device_map(device_map: str | None) -> None:
    """``device_map=auto`` spreads one process over every GPU: refuse it inside a torchrun job."""
    _, size = world()
    if device_map is not None and size > 1:
        raise JobError(
            "device_map=auto spreads one process over every visible GPU, so it cannot run in each of "
            f"the {size} processes of a torchrun job; run one process with it, or torchrun without it"
        )


def is_comm_failure(exc: BaseException) -> bool:
    """A collective that failed because another rank died, closed its connection or timed out."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        s in text
        for s in ("Connection closed by peer", "Connection reset", "Timed out", "timed out", "gloo", "NCCL")
    )


@contextlib.contextmanager
def job(timeout_s: float = DEFAULT_TIMEOUT_S, settings: dict | None = None) -> Iterator[tuple[int, int]]:
    """Join the job (if launched), check that every rank got the same ``settings``, and turn a collective
    that failed because another rank died or timed out into one sentence; leave the group at the end."""
    joined = init_group(timeout_s)
    try:
        if joined and settings is not None:
            agree(settings)
        yield world()
    except RuntimeError as exc:
        if joined and is_comm_failure(exc):
            text = str(exc)
            why = (
                "its connection closed"
                if "closed" in text or "reset" in text
                else f"no answer within --dist-timeout {timeout_s:g} s"
                if "imed out" in text
                else _first_line(exc)[:120]
            )
            raise RomaError(
                f"another process of this torchrun job stopped ({why}), so this one stopped too; nothing of "
                "this run was kept (see that process's own message above)"
            ) from None
        raise
    finally:
        if joined:
            with contextlib.suppress(Exception):
                close_group()


def _option(key: str) -> str:
    """An argparse destination as the user typed it: ``cfg__optimizer__lr`` -> ``optimizer.lr``,
    ``batch_size`` -> ``--batch-size``."""
    if key.startswith("cfg__"):
        return key[len("cfg__") :].replace("__", ".")
    return "--" + key.replace("_", "-")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
