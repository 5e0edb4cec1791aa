"""Atomic writes: write to a temporary name in the same folder, then rename.

A killed process therefore never leaves a torn or half-written output behind. The file gets the
mode a plain ``open()`` would give it under the user's umask (``tempfile.mkstemp`` alone creates
0600, which colleagues on a shared machine could not read). JSON is strict: ``finite_json``
turns NaN and infinities into ``null`` where a value may be missing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from moe_roma.io.errors import RomaError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("hi")
    >>> (d / "a.txt").read_text()
    'hi'
    """
    path = Path(path)
    # Folders created here (deepest first) are removed again if the write fails: a failure leaves nothing.
    created = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    if created:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            remove_empty(created)
            raise RomaError(f"{path.parent}: cannot create the output folder ({exc.strerror})") from None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        remove_empty(created)
        raise RomaError(f"{path}: cannot write here ({exc.strerror or exc})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # After the write: some writers (safetensors) replace the file and its mode with their own.
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        remove_empty(created)
        raise RomaError(f"{path}: could not be written ({exc.strerror or exc})") from None
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        remove_empty(created)
        reason = _write_error(exc)
        if reason is not None:
            raise RomaError(f"{path}: could not be written ({reason})") from None
        raise


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back; there is no other portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def finite_json(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None, so that strict JSON can hold it.

    >>> finite_json({"loss": float("nan"), "steps": [1, float("inf")]})
    {'loss': None, 'steps': [1, None]}
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty; a non-empty one is kept, with its parents."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _write_error(exc: BaseException) -> str | None:
    """The OS's reason when ``exc`` is a failed write reported by a library as its own error type.

    safetensors raises ``SafetensorError("Error while serializing: I/O error: No space left on
    device (os error 28)")``, not ``OSError``, when the disk is full; the reason is returned
    without its errno suffix, as ``OSError.strerror`` gives it, since callers put it in parentheses.
    """
    text = str(exc)
    if type(exc).__name__ != "SafetensorError" or "I/O error" not in text:
        return None
    reason = text.split("I/O error", 1)[1].lstrip(": ").splitlines()
    return re.sub(r"\s*\(os error \d+\)$", "", reason[0]) if reason else "I/O error"


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` and flush it to disk (NaN is refused, not written).

    Use it on a path from ``atomic_path``; several such paths in one ``ExitStack`` land together.
    """
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=indent, ensure_ascii=False, allow_nan=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (NaN is refused, not written)."""
    with atomic_path(path) as tmp:
        write_json(tmp, obj, indent)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
