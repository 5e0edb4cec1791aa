"""One dose of the positive control on disk: the corrupted model, its data files and its gates.

A control folder holds everything a ``roma experiment`` file needs to run methods on the dose::

    model/               the downstream testbed model with the misrouting planted (build.json: how)
    data/train.jsonl     the RoMA training set: the testbed's train split, ``marked_share`` marked
    data/<split>_marked.jsonl, data/<split>_plain.jsonl
                         validation (picks settings) and the evaluation splits, both versions
    gates.json           the gates, measured before any method runs (``gates.measure_gates``)
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from moe_roma.io.outputs import Kind, guard_output
from moe_roma.testbed.control.gates import EVAL_SPLITS, measure_gates
from moe_roma.testbed.control.plant import ControlConfig, plant_misrouting
from moe_roma.testbed.control.setting import mark, marked_share_split

CONTROL_FOLDER = Kind(
    "control folder",
    members=("model", "data", "gates.json"),
    finished=("gates.json",),
)
SPLITS = ("validation", *EVAL_SPLITS)


@dataclass(frozen=True)
class ControlDose:
    """A dose: the corruption's settings, the marked share of RoMA's training set and the share's seed."""

    config: ControlConfig
    marked_share: float = 0.5
    share_seed: int = 0


def write_control_data(folder: Path, dose: ControlDose) -> dict[str, int]:
    """The dose's data files under ``folder`` (module doc); returns the item count of each file."""
    from moe_roma.testbed import load_testbed_splits
    from moe_roma.testbed.tasks import write_split_jsonl

    cfg = dose.config
    splits = load_testbed_splits(0, testbed="downstream")
    files = {
        "train": marked_share_split(
            splits["train"], dose.marked_share, dose.share_seed, cfg.marker_position, cfg.marker_sentences
        )
    }
    for split in SPLITS:
        files[f"{split}_plain"] = list(splits[split])
        files[f"{split}_marked"] = [
            mark(ex, cfg.marker_position, cfg.marker_sentences) for ex in splits[split]
        ]
    folder.mkdir(parents=True, exist_ok=True)
    return {
        name: (write_split_jsonl(items, folder / f"{name}.jsonl"), len(items))[1]
        for name, items in files.items()
    }


def _planted(folder: Path, config: ControlConfig):
    """The corrupted model of another control folder, if it was planted with ``config`` (else one
    sentence)."""
    from moe_roma.io.errors import RomaError
    from moe_roma.models.loading import load_model

    record = folder / "model" / "build.json"
    if not record.is_file():
        raise RomaError(f"{folder}: not a control folder (no model/build.json)")
    build = json.loads(record.read_text(encoding="utf-8"))
    if build.get("config") != asdict(config):
        raise RomaError(f"{record}: planted with other settings than this dose's; plant it anew instead")
    model, _ = load_model(str(folder / "model"), dtype="float32", device="cpu")
    return model, build


def clean_model_path(config: ControlConfig) -> Path:
    """The model the misrouting is planted into, the clean model of every gate: the task-routed host
    ``config.host`` names (its ``model`` folder), else the downstream testbed's model."""
    from moe_roma.testbed import testbed_model_path

    if not config.host:
        return testbed_model_path("downstream")
    host = Path(config.host)
    return host / "model" if (host / "model").is_dir() else host


def build_control(
    out: Path,
    dose: ControlDose,
    overwrite: bool = False,
    log: Callable[[str], None] = lambda _: None,
    planted: Path | None = None,
) -> dict:
    """Plant the dose into a copy of its clean model (``clean_model_path``); write the control folder ``out``.

    ``planted``: reuse the corrupted model of that control folder (same corruption, another marked share).
    The folder appears only when it is complete (staged, then swapped in): a stopped build leaves none.
    """
    from moe_roma.models.loading import load_model

    target = guard_output("--out", out, CONTROL_FOLDER, overwrite=overwrite)
    clean, tok = load_model(str(clean_model_path(dose.config)), dtype="float32", device="cpu")
    if planted is not None:
        corrupted, build = _planted(planted, dose.config)
        build["reused_from"] = str(planted)
    else:
        corrupted = copy.deepcopy(clean)
        build = plant_misrouting(corrupted, tok, dose.config, log=log)
    build.update(marked_share=dose.marked_share, share_seed=dose.share_seed)
    log("measuring the gates")
    cfg = dose.config
    gates = measure_gates(
        clean,
        corrupted,
        tok,
        cfg.layers,
        dose.marked_share,
        dose.share_seed,
        log,
        cfg.marker_position,
        cfg.marker_sentences,
    )
    with target.staged() as tmp:
        build["files"] = write_control_data(tmp / "data", dose)
        corrupted.save_pretrained(tmp / "model")
        tok.save_pretrained(tmp / "model")
        (tmp / "model" / "build.json").write_text(json.dumps(build, indent=1), encoding="utf-8")
        gates["build"] = build
        (tmp / "gates.json").write_text(json.dumps(gates, indent=1, default=str), encoding="utf-8")
    return gates
