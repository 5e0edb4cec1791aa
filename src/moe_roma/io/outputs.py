"""One guard for everything a command writes.

Every writing command calls ``guard_output`` for each output before it loads a model or reads data,
and writes only through what it returns. The guard refuses, in one sentence:

* an output that is a symbolic link, or a folder output that holds one (a write would follow it out
  of the folder);
* an output that is an input, or two outputs that are one file (``io.paths.guard_outputs``);
* a folder that holds anything but a result of the same kind (``roma train --out .`` in a project
  folder would replace its README.md with a model card);
* a finished result without ``--overwrite``, and an unfinished one (a resumable state) without
  ``--resume`` or ``--overwrite``;
* a name from a configuration file that would leave its folder (``safe_name``).

A folder that is one result (a training run, a merged model, a report) is replaced by writing the
new one into a sibling staging folder and swapping it in only when it is complete
(``Output.staged``): a stop or a failure on the way keeps the old result as it was.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> REPORT = Kind("report folder", members=("report.json",), finished=("report.json",))
>>> with guard_output("--out", d / "r", REPORT).staged() as tmp:
...     _ = (tmp / "report.json").write_text("{}")
>>> sorted(p.name for p in (d / "r").iterdir())
['report.json']
>>> guard_output("--out", d / "r", REPORT)  # doctest: +ELLIPSIS, +NORMALIZE_WHITESPACE
Traceback (most recent call last):
...
moe_roma.io.errors.RomaError: --out ... already holds a finished report folder (report.json);
pass --overwrite to replace it (or choose another --out)
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from moe_roma.io.atomic import remove_empty
from moe_roma.io.errors import RomaError
from moe_roma.io.interrupts import critical
from moe_roma.io.paths import PathLike, PathSpec, _inside, _paths, guard_outputs

STAGING = ".roma-new-"  # infix of a staging folder: <parent>/.<name>.roma-new-XXXX
RETIRED = ".roma-old-"  # infix of a replaced result on its way out


def landing_path(folder: str | Path) -> Path:
    """Where ``folder`` will be once complete: the output a staging folder is swapped into, else itself
    (for a file that records its own location, such as an MLflow store's artifact folder).

    >>> landing_path("/runs/.t.roma-new-abc123"), landing_path("/runs/t")
    (PosixPath('/runs/t'), PosixPath('/runs/t'))
    """
    folder = Path(folder)
    name = folder.name
    if name.startswith(".") and STAGING in name:
        return folder.with_name(name[1:].rsplit(STAGING, 1)[0])
    return folder


MAX_NAME = 200  # characters of a name from a configuration file (a folder or file name)


@dataclass(frozen=True)
class Kind:
    """What one output is: a file, or a folder of one result (or of several, ``shelf``).

    ``members`` are the ``fnmatch`` patterns of the entries such a folder holds; ``finished`` the
    entries that make it a finished result; ``partial`` those of an unfinished one that can be
    resumed; ``guests`` members that belong only beside a finished or partial entry (a README.md
    alone is the user's, not a run's). A ``shelf`` folder holds many results side by side (an
    lm-eval task folder): the files this run writes are its results, each replaced alone.
    """

    label: str
    folder: bool = True
    members: tuple[str, ...] = ()
    finished: tuple[str, ...] = ()
    partial: tuple[str, ...] = ()
    guests: tuple[str, ...] = ()
    shelf: bool = False

    @property
    def a_label(self) -> str:
        """The label with its indefinite article ("an experiment folder", "a run")."""
        return f"{'an' if self.label[:1] in 'aeiou' else 'a'} {self.label}"


FILE = Kind("file", folder=False)


def safe_name(value: object, where: str, what: str = "name") -> str:
    """``value`` as a file or folder name that stays inside its folder, else one sentence naming ``where``.

    >>> safe_name("roma[k=1]", "exp.yaml")
    'roma[k=1]'
    >>> safe_name("../x", "exp.yaml", "'name'")  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    moe_roma.io.errors.RomaError: exp.yaml: 'name' '../x' is not a plain name: it would leave its folder
    (no '/', '\\\\', '.' or '..')
    """
    text = str(value)
    if len(text) > MAX_NAME:
        raise RomaError(f"{where}: {what} is {len(text)} characters long; the limit is {MAX_NAME}")
    if not text or text in (".", "..") or any(c in text for c in "/\\\0") or text != text.strip():
        raise RomaError(
            f"{where}: {what} {text!r} is not a plain name: it would leave its folder (no '/', '\\\\', "
            "'.' or '..')"
        )
    return text


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise RomaError(f"{path}: cannot be examined ({exc.strerror or exc})") from None


def _identity(path: Path) -> tuple[int, int] | None:
    st = _lstat(path)
    return None if st is None else (st.st_dev, st.st_ino)


def _is_ours(name: str) -> bool:
    """A temporary file or staging folder of an earlier write that was killed (never a result)."""
    return name.startswith(".") and (name.endswith(".tmp") or STAGING in name or RETIRED in name)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _link_inside(folder: Path) -> Path | None:
    """The first symbolic link anywhere under ``folder`` (links are not followed down)."""
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in sorted(dirs + files):
            p = Path(root) / name
            if p.is_symlink():
                return p
    return None


@dataclass
class Output:
    """An output the guard let through; write it with ``staged`` (a folder that is one result) or in place."""

    option: str
    path: Path
    kind: Kind
    replaces: bool  # a finished (or unfinished) result is there and is to be replaced
    identity: tuple[int, int] | None  # what was at the path when it was checked

    @contextlib.contextmanager
    def staged(self) -> Iterator[Path]:
        """Yield an empty sibling folder to write the result into; swap it in when the block succeeds.

        A failure or a stop inside the block removes the staging folder and leaves the path as it was.
        """
        staging = self.stage()
        try:
            yield staging
        except BaseException as exc:
            self.discard(staging)
            said = self.restated(exc, staging)
            if said is not None:
                raise said from None
            raise
        self.commit(staging)

    def restated(self, exc: BaseException, staging: Path) -> BaseException | None:
        """One sentence for a failure while writing into ``staging``, naming the file where it was to land
        (never the hidden staging folder) and saying that the old result is kept; None: not a write
        failure."""
        reason = _write_failure(exc)
        if reason is not None:  # a full disk, the file-size limit
            return RomaError(f"{self.option} {self.path}: {reason}; the old result, if any, is kept")
        if isinstance(exc, RomaError) and str(staging) in str(exc):
            kept = "" if self.identity is None else f"; the old result in {self.path} is kept"
            text = str(exc).replace(str(staging), str(self.path)) + kept
            try:
                return type(exc)(text)
            except TypeError:  # an error type that takes more than a message
                return RomaError(text)
        return None

    def stage(self) -> Path:
        """A new, empty staging folder beside the output (its parents are created if needed)."""
        parent = self.path.parent
        created = [p for p in (parent, *parent.parents) if not p.exists()]
        try:
            parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}{STAGING}", dir=parent))
        except OSError as exc:
            remove_empty(created)
            raise RomaError(f"{self.option} {self.path}: cannot write here ({exc.strerror or exc})") from None
        os.chmod(staging, 0o777 & ~_umask())
        self._created = created
        return staging

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)
        remove_empty(getattr(self, "_created", []))

    def commit(self, staging: Path) -> None:
        """Swap the complete result in; a signal waits until both renames are done."""
        if _identity(self.path) != self.identity:
            raise RomaError(
                f"{self.option} {self.path} was changed by another process while this one ran; this "
                f"run's complete result is kept in {staging}"
            )
        with critical():
            retired = None
            if self.identity is not None:
                retired = Path(tempfile.mkdtemp(prefix=f".{self.path.name}{RETIRED}", dir=self.path.parent))
                os.replace(self.path, retired / "result")
            os.replace(staging, self.path)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)


_WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EROFS, getattr(errno, "EDQUOT", errno.ENOSPC)}


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Attach ``path`` to a write error raised inside without a file name (a full disk met by a library's
    own write, a plot's), so that the one sentence names the file that could not be written."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno in _WRITE_ERRNOS:
            exc.filename = str(path)
        raise


def _write_failure(exc: BaseException) -> str | None:
    """What went wrong when writing into a staging folder, naming the file, or None for other errors."""
    from moe_roma.io.atomic import _write_error

    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
        name = Path(exc.filename).name if exc.filename else None
        return (
            f"{name} could not be written ({exc.strerror})"
            if name
            else f"could not be written ({exc.strerror})"
        )
    reason = _write_error(exc)
    return None if reason is None else f"could not be written ({reason})"


def _umask() -> int:
    from moe_roma.io.atomic import current_umask

    return current_umask()


def guard_output(
    option: str,
    path: PathLike,
    kind: Kind = FILE,
    *,
    inputs: Mapping[str, PathSpec] | None = None,
    files: Sequence[PathLike] = (),
    others: Mapping[str, PathSpec] | None = None,
    overwrite: bool = False,
    resume: bool | None = None,
    extend: bool = False,
) -> Output:
    """Check the output ``option`` ``path`` of ``kind`` before anything is written (see the module doc).

    ``inputs`` maps the options that name inputs to their paths; ``files`` are the files this run
    writes besides ``path`` (a side-car) or, for a folder, inside it; ``others`` the run's other outputs
    (no two may be one file). ``overwrite`` lets a finished
    result be replaced; ``resume`` lets an unfinished one be continued in place (None: the command
    cannot resume, so an unfinished result can only be replaced); ``extend``, with ``resume``, lets a
    finished one be continued in place too (a grid given more runs, whose summary is rewritten last).
    """
    out = Path(path).expanduser()
    if not str(path).strip():
        raise RomaError(f"{option} is empty; name the output")
    extra = [Path(f).expanduser() for f in files]
    guard_outputs(inputs or {}, {option: [out, *extra], **(others or {})})
    if kind.folder and not kind.shelf:  # the folder is replaced whole: nothing inside it may be an input
        _refuse_inputs_inside(option, out, inputs or {})
    _refuse_links(option, [out, *extra])
    st = _lstat(out)
    identity = None if st is None else (st.st_dev, st.st_ino)
    if not kind.folder:
        return Output(option, out, kind, _check_file(option, out, st, extra, overwrite), identity)
    if st is None:
        return Output(option, out, kind, False, None)
    if not stat.S_ISDIR(st.st_mode):
        raise RomaError(f"{option} {out} exists and is not a folder; {kind.a_label} is a folder")
    names = _result_entries(option, out, kind)
    if kind.shelf:
        present = [f for f in extra if _lstat(f) is not None]
        if present and not overwrite:
            raise RomaError(
                f"{option} {out} already holds {present[0].name}; pass --overwrite to replace it (or "
                f"choose another {option})"
            )
        return Output(option, out, kind, bool(present), identity)
    replaces = _replaces(option, out, kind, names, overwrite, resume, extend)
    return Output(option, out, kind, replaces, identity)


def _refuse_inputs_inside(option: str, out: Path, inputs: Mapping[str, PathSpec]) -> None:
    """Refuse an input inside an output folder that is replaced whole: the swap would delete it."""
    for label, spec in inputs.items():
        for src in _paths(spec):
            if _inside(out, src):
                raise RomaError(
                    f"{label} {src} is inside the output folder {option} {out}; refusing to write "
                    "over an input (choose another output folder)"
                )


def _refuse_links(option: str, paths: Sequence[Path]) -> None:
    """Refuse an output path that is a symbolic link: a write through it would land elsewhere."""
    for p in paths:
        st = _lstat(p)
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise RomaError(
                f"{option} {p} is a symbolic link; outputs never follow links (remove it or choose "
                "another path)"
            )


def _result_entries(option: str, out: Path, kind: Kind) -> list[str]:
    """The entries of the existing folder ``out`` (sorted, leftovers of killed writes left out), once no
    link is anywhere under it and every entry belongs to a ``kind`` result: the folder is the user's
    otherwise, and replacing it would delete their files."""
    link = _link_inside(out)
    if link is not None:
        raise RomaError(
            f"{option} {out} holds the symbolic link {link}; outputs never follow links (remove it or "
            "choose another folder)"
        )
    names = sorted(p.name for p in out.iterdir() if not _is_ours(p.name))
    anchored = any(_matches(n, kind.finished + kind.partial) for n in names)
    foreign = [
        n for n in names if not _matches(n, kind.members) or (_matches(n, kind.guests) and not anchored)
    ]
    if foreign:
        raise RomaError(
            f"{option} {out} holds {foreign[0]!r}, which is not part of {kind.a_label}; refusing to "
            "write into it (choose a new or empty folder)"
        )
    return names


def _replaces(
    option: str,
    out: Path,
    kind: Kind,
    names: list[str],
    overwrite: bool,
    resume: bool | None,
    extend: bool = False,
) -> bool:
    """Whether a result in ``out`` (of entries ``names``) is to be replaced; a finished one needs
    ``overwrite`` (or ``resume`` with ``extend``: continued in place), an unfinished one ``resume``
    (continued in place) or ``overwrite``."""
    done = [n for n in names if _matches(n, kind.finished)]
    if done and not overwrite and resume and extend:
        return False
    if done and not overwrite:
        what = "; nothing to resume" if resume else ""
        raise RomaError(
            f"{option} {out} already holds a finished {kind.label} ({done[0]}){what}; pass --overwrite "
            f"to replace it (or choose another {option})"
        )
    started = [n for n in names if _matches(n, kind.partial)]
    if started and not done and not (overwrite or resume):
        how = "pass --resume to continue it or --overwrite" if resume is not None else "pass --overwrite"
        raise RomaError(
            f"{option} {out} holds an unfinished {kind.label} ({started[0]}); {how} to start again"
        )
    return bool(done or (started and overwrite))


def _check_file(
    option: str, out: Path, st: os.stat_result | None, extra: list[Path], overwrite: bool
) -> bool:
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise RomaError(f"{option} {out} is a folder; give a file name")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise RomaError(f"{option} {out} exists and is not a regular file; give a file name")
    present = [p for p in (out, *extra) if _lstat(p) is not None]
    if present and not overwrite:
        raise RomaError(
            f"{option} {present[0]} already exists; pass --overwrite to replace it (or choose another "
            f"{option})"
        )
    return bool(present)
