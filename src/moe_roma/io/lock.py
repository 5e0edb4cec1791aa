"""An exclusive lock on an output folder, held for a whole run, naming its holder's PID.

``roma train`` takes ``<out>/.roma.lock`` before it writes anything else there; a second run into
the same folder finds it held and is refused with the holder's PID. The lock is an ``fcntl``
advisory lock on the open file, so the operating system releases it when the holder dies, even
by SIGKILL: a stale lock file left behind by a killed run never blocks the next one.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with FolderLock(d, "roma train"):
...     (d / LOCK_NAME).read_text().split()[0] == str(os.getpid())
True
>>> (d / LOCK_NAME).exists()
False
"""

from __future__ import annotations

import os
from pathlib import Path

from moe_roma.io.errors import RomaError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: an O_EXCL lock file (a killed holder's file must be removed by hand)
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".roma.lock"


class FolderLock:
    """``with FolderLock(folder, "roma train"):`` holds ``folder/.roma.lock`` exclusively, or refuses."""

    def __init__(self, folder: str | Path, holder: str) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.holder = holder
        self.fd: int | None = None

    def acquire(self) -> None:
        while True:
            try:
                flags = os.O_RDWR | os.O_CREAT | (0 if fcntl is not None else os.O_EXCL)
                fd = os.open(self.path, flags, 0o644)
            except FileExistsError:
                raise self._busy() from None
            except OSError as exc:
                raise RomaError(f"{self.path}: cannot create the lock file ({exc.strerror or exc})") from None
            if fcntl is None:
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise self._busy() from None
            # The holder before us may have removed the file between our open and our lock: then we
            # hold a lock on a file nobody else will open; take the one now at the path instead.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {self.holder}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None

    def _busy(self) -> RomaError:
        try:
            text = self.path.read_text(encoding="utf-8").split(maxsplit=1)
        except OSError:
            text = []
        who = f"process {text[0]}" if text and text[0].isdigit() else "another process"
        what = f" ({text[1].strip()})" if len(text) > 1 else ""
        return RomaError(
            f"{self.path.parent}: in use by {who}{what}, which holds {self.path}; wait for it to finish or "
            "choose another output folder"
        )

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
