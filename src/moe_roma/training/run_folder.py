"""The output folder of one training run: what may be written into it, and what a stop leaves there.

* ``check_reusable``: a folder that holds a finished run (``router_config.json``) is not trained
  into again without ``overwrite``; one that holds a resumable state needs ``resume`` (continue)
  or ``overwrite`` (start again), so neither is lost by repeating a command. ``TRAIN_RUN`` is the
  kind ``io.outputs.guard_output`` checks the folder against (nothing but a run's files in it); an
  overwrite trains into a staging folder and swaps it in only when the new run is complete.
* ``claim``: creates the folder if needed and holds its lock (``io.lock.FolderLock``) for the run.
  If the run fails or is stopped, what it wrote is removed again (the whole folder when the run
  created it), unless a resumable state is there: then the state, the metrics up to it and the
  neighbour cache stay, and ``interrupted`` says how to resume.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from moe_roma.io.errors import RomaError
from moe_roma.io.lock import LOCK_NAME, FolderLock
from moe_roma.io.outputs import Kind
from moe_roma.io.tensorfile import load_tensor_meta
from moe_roma.models.card import CARD_NAME
from moe_roma.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from moe_roma.training.state import STATE_NAME

METRICS_NAME = "metrics.jsonl"
NEIGHBOURS_NAME = "neighbours.safetensors"
OUTPUT_NAMES = (CONFIG_NAME, WEIGHTS_NAME, METRICS_NAME, NEIGHBOURS_NAME, STATE_NAME, LOCK_NAME, CARD_NAME)
# what --report-to writes beside metrics.jsonl (mlruns: an MLflow file store of an older roma)
TRACKER_FOLDERS = ("tensorboard", "wandb", "mlruns", "mlflow.db*", "mlartifacts")
TRAIN_RUN = Kind(
    "run",
    members=(*OUTPUT_NAMES, *TRACKER_FOLDERS),
    finished=(CONFIG_NAME,),
    partial=(STATE_NAME,),
    guests=(CARD_NAME,),
)


class TrainFolder:
    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.state_path = self.out / STATE_NAME

    def outputs(self) -> list[Path]:
        """Every file a run writes into the folder (to compare with the inputs before writing)."""
        return [self.out / name for name in OUTPUT_NAMES]

    def state_step(self) -> int | None:
        """The step of the resumable state in the folder, None when there is none (or it is unreadable)."""
        if not self.state_path.is_file():
            return None
        try:
            step = load_tensor_meta(self.state_path, "training state").get("step")
        except RomaError:
            return None
        return step if isinstance(step, int) else None

    def check_reusable(self, resume: bool, overwrite: bool) -> None:
        out = self.out
        if (out / CONFIG_NAME).is_file() and not overwrite:
            what = "nothing to resume" if resume else "it is not trained again"
            raise RomaError(
                f"{out} already holds a finished run ({CONFIG_NAME}); {what} without --overwrite "
                "(or choose another --out)"
            )
        if self.state_path.is_file() and not (resume or overwrite):
            step = self.state_step()
            at = f" at step {step}" if step is not None else ""
            raise RomaError(
                f"{out} holds a resumable state{at} ({STATE_NAME}); pass --resume to continue it or "
                "--overwrite to start again"
            )

    @contextlib.contextmanager
    def claim(self, lock: bool = True) -> Iterator[Claim]:
        """Hold the folder for the run; on failure or stop, remove what the run left (see the module doc)."""
        if not lock:  # another process of a multi-process run owns the folder
            yield Claim(self, fresh=False, before=set())
            return
        created = [p for p in (self.out, *self.out.parents) if not p.exists()]
        try:
            self.out.mkdir(parents=True)
            fresh = True
        except FileExistsError:
            fresh = False
        except OSError as exc:
            raise RomaError(f"{self.out}: cannot create the output folder ({exc.strerror or exc})") from None
        before = set() if fresh else {p.name for p in self.out.iterdir()}
        claim = Claim(self, fresh, before)
        try:
            with FolderLock(self.out, "roma train"):
                try:
                    yield claim
                except BaseException:
                    claim.clean_up()
                    raise
        except BaseException:
            if fresh and self.out.is_dir() and not any(self.out.iterdir()):
                self.out.rmdir()  # nothing of this run is left in the folder it created, nor the folder
            if fresh and not self.out.exists():
                for folder in created[1:]:  # parents this run created, deepest first, while empty
                    try:
                        folder.rmdir()
                    except OSError:
                        break
            raise


class Claim:
    def __init__(self, folder: TrainFolder, fresh: bool, before: set[str]) -> None:
        self.folder, self.fresh, self.before = folder, fresh, before

    def keeps_state(self) -> bool:
        return self.folder.state_path.is_file()

    def finished(self) -> bool:
        """Whether this run's checkpoint is in place (a finished run found there earlier was refused or,
        with --overwrite, removed before training)."""
        return (self.folder.out / CONFIG_NAME).is_file()

    def clean_up(self) -> None:
        """After a failure or stop: keep a resumable state (and its files), else remove what the run wrote."""
        out = self.folder.out
        for tmp in out.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        if self.keeps_state() or self.finished():
            return  # a state to resume from, or the checkpoint this run completed (a stop that came after it)
        if self.fresh:
            for p in out.iterdir():  # the lock file goes when the lock is released
                if p.name != LOCK_NAME:
                    shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
            return
        for p in out.iterdir():
            if p.name not in self.before and p.name != LOCK_NAME:
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)

    def interrupted(
        self, step: int | None, total: int | None, signal_name: str, replacing: bool = False
    ) -> str:
        """The sentence a stopped run ends with: where it stopped, what is kept and how to resume.

        ``replacing``: an --overwrite run, which trained into a staging folder that is now gone.
        """
        where = f"after {step} of {total} steps" if step is not None and total else "before training began"
        out = self.folder.out
        if replacing:
            return (
                f"stopped by {signal_name} {where}; the previous run in {out} is kept as it was (this run's "
                "files were removed)"
            )
        if self.finished():
            return f"stopped by {signal_name} as the run ended; its checkpoint in {out} is complete"
        saved = self.folder.state_step()
        if saved is not None:
            return (
                f"stopped by {signal_name} {where}; the last complete state (step {saved}) is in "
                f"{self.folder.state_path}: run the same command with --resume to continue"
            )
        kept = f"{out} was removed" if self.fresh else f"the files this run wrote in {out} were removed"
        return (
            f"stopped by {signal_name} {where}; nothing was kept ({kept}; use --runtime.save-every N to keep "
            "resumable states)"
        )
