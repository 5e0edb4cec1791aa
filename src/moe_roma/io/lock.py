"""An exclusive lock on an output folder, held for a whole run, naming its holder's PID.

``roma train`` takes ``<out>/.roma.lock`` before it writes anything else there; a second run into
the same folder finds it held and is refused with the holder's PID. The lock is an ``fcntl``
advisory lock on the open file, so the operating system releases it when the holder dies, even
by SIGKILL: a stale lock file left behind by a killed run never blocks the next one.

The lock file is only ever created new (``O_CREAT | O_EXCL | O_NOFOLLOW``) and written through that
new descriptor: a stale one is removed (after taking its lock, so a live holder's never is), and a
symbolic or hard link planted at its name is refused, never followed or truncated.

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
import stat
from pathlib import Path

from moe_roma.io.errors import RomaError

try:  # POSIX
    import fcntl
except (
    ImportError
):  # pragma: no cover - Windows: an O_EXCL lock file (a killed holder's file must be removed by hand)
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".roma.lock"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class FolderLock:
    """``with FolderLock(folder, "roma train"):`` holds ``folder/.roma.lock`` exclusively, or refuses."""

    def __init__(self, folder: str | Path, holder: str) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.holder = holder
        self.fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = self._create()
            if fd is None:  # a lock file is there: held by a live run, or left by a killed one
                self._take_stale()
                continue
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:  # another run created it between our create and our lock
                    os.close(fd)
                    raise self._busy() from None
            if self._is_ours(fd):
                break
            os.close(fd)  # the file was replaced under us: start again
        self.fd = fd
        try:
            os.write(fd, f"{os.getpid()} {self.holder}\n".encode())
        except OSError as exc:  # a full disk: the lock holds without its note, but say why nothing follows
            self.release()
            raise RomaError(f"{self.path}: could not be written ({exc.strerror or exc})") from None

    def _create(self) -> int | None:
        """A new lock file (never an existing one, never through a link), or None when one is there."""
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
        except FileExistsError:
            return None
        except OSError as exc:
            raise RomaError(f"{self.path}: cannot create the lock file ({exc.strerror or exc})") from None

    def _take_stale(self) -> None:
        """Remove a lock file nobody holds; refuse a held one, and anything that is not a plain file of ours.

        The file is opened without following links and never written: a link or a hard link planted
        at the lock's name cannot make this run truncate or overwrite another file.
        """
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return  # its holder just removed it
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            if stat.S_ISLNK(st.st_mode):
                what = "a symbolic link"
            elif stat.S_ISREG(st.st_mode):
                what = "a hard link"
            else:
                what = "not a regular file"
            raise RomaError(
                f"{self.path} is {what}, not a lock file of roma; remove it (a lock is never written through "
                "a link)"
            )
        if fcntl is None:
            raise self._busy()
        try:
            fd = os.open(self.path, os.O_RDONLY | _NOFOLLOW)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise RomaError(f"{self.path}: cannot open the lock file ({exc.strerror or exc})") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise self._busy() from None
            if self._is_ours(fd):  # still the file at the path, and nobody holds it: a killed run's
                os.unlink(self.path)
        finally:
            os.close(fd)

    def _is_ours(self, fd: int) -> bool:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if self._is_ours(
                self.fd
            ):  # the folder may have been swapped away (an overwrite): leave others' files
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
