"""Inputs are never written over, and only regular files are read.

Every command lists the paths it reads and the paths it will write, and calls ``guard_outputs``
before it writes anything. Each path is resolved (``~``, ``..`` and symbolic links) and, where it
exists, identified by its device and inode, so a hard link or a symlinked folder is caught as
well. An output clashes with an input when

* both are the same file or folder, or
* the input is a folder and the output would replace a file already inside it (``roma collect
  --out model/config.json``), or
* two outputs are the same file (``roma eval --json r.json --predictions r.json``).

``check_regular_file`` refuses a FIFO, a device or a socket given as a data file: reading one
would block forever (a FIFO with no writer) or never end (``/dev/zero``).

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp()); (d / "train.jsonl").write_text("{}")
2
>>> guard_outputs({"--data": d / "train.jsonl"}, {"--out": d / "routing.json"})
>>> same_path(d / "train.jsonl", d / "." / "train.jsonl")
True
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from moe_roma.io.errors import DataError, RomaError

PathLike = str | os.PathLike
PathSpec = PathLike | Iterable[PathLike] | None


def _paths(spec: PathSpec) -> list[Path]:
    if spec is None:
        return []
    if isinstance(spec, (str, os.PathLike)):
        return [Path(spec)]
    return [Path(p) for p in spec if p is not None]


def _resolved(path: Path) -> Path:
    try:
        return path.expanduser().resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare the path as written
        return path.expanduser().absolute()


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def same_path(a: PathLike, b: PathLike) -> bool:
    """Whether ``a`` and ``b`` name the same file or folder (resolved; hard links included)."""
    pa, pb = Path(a), Path(b)
    if _resolved(pa) == _resolved(pb):
        return True
    ia, ib = _inode(pa), _inode(pb)
    return ia is not None and ia == ib


def _inside(folder: Path, path: Path) -> bool:
    rf, rp = _resolved(folder), _resolved(path)
    return rf != rp and rf in rp.parents


def guard_outputs(inputs: Mapping[str, PathSpec], outputs: Mapping[str, PathSpec]) -> None:
    """Refuse, before anything is written, an output that would replace an input or another output.

    ``inputs`` and ``outputs`` map the option that named a path (``"--data"``) to the path, a list of
    paths, or None. Inputs that are not local paths (a Hugging Face hub id) simply match nothing.
    """
    ins = [(label, p) for label, spec in inputs.items() for p in _paths(spec)]
    outs = [(label, p) for label, spec in outputs.items() for p in _paths(spec)]
    for out_label, out in outs:
        for in_label, src in ins:
            if same_path(out, src):
                raise RomaError(
                    f"{out_label} {out} is the input {in_label} {src}; refusing to write over an input "
                    "(choose another output path)"
                )
            if src.is_dir() and _inside(src, out) and out.exists():
                raise RomaError(
                    f"{out_label} {out} would replace a file of the input {in_label} {src}; choose another "
                    "output path"
                )
    for i, (label_a, a) in enumerate(outs):
        for label_b, b in outs[i + 1 :]:
            if same_path(a, b):
                raise RomaError(
                    f"{label_a} and {label_b} are the same file ({a}); give each output its own path"
                )


def check_regular_file(path: PathLike, what: str = "file") -> Path:
    """``path`` if it is an existing regular file (symlinks followed), else a ``DataError`` saying what is."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise DataError(p, None, f"{what} does not exist") from None
    except OSError as exc:
        raise DataError(p, None, f"{what} cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISREG(mode):
        return p
    if stat.S_ISDIR(mode):
        raise DataError(p, None, f"is a folder; expected a {what}")
    raise DataError(p, None, f"is {_kind(mode)}, not a regular file; give the {what} as a file on disk")


def check_not_special(path: PathLike, what: str = "input") -> None:
    """Refuse a FIFO, device or socket (a folder or a missing path is left to the caller)."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise DataError(p, None, f"is {_kind(mode)}, not a regular file; give the {what} as a file on disk")


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def local_path(name_or_path: PathLike | None) -> Path | None:
    """``name_or_path`` as a path when it exists on disk (a model folder), None for a hub id or nothing."""
    if name_or_path is None:
        return None
    p = Path(name_or_path).expanduser()
    return p if p.exists() else None
