"""Why RoMA's target regains only part of the repair: its distance from the marked items' clean routing.

For each built dose (runs/control/<dose>/: the corrupted model and its data), RoMA's target for each
held-out marked item (the kernel mean of its successful neighbours in the dose's RoMA training set, as
the gates' target test builds it) is compared with the item's clean routing, beside the same
neighbours' clean routing averaged with the same weights (`readouts.target_distance`). Writes
results/control/target_distance.json and target_distance.md. Exploratory: added after the control's
results were seen (docs/control.md, "Where the damage lies").

    PYTHONPATH=src python scripts/control_target_distance.py [--threads 1] [dose ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from control_grid import DOSES, SPLITS, dose_name  # noqa: E402

RESULTS = ROOT / "results" / "control"
RUNS = ROOT / "runs" / "control"


def dose_distance(name: str) -> dict:
    """The target-distance readout of one built dose."""
    from moe_roma.data.loaders import load_examples
    from moe_roma.models.loading import load_model
    from moe_roma.testbed.control.build import clean_model_path
    from moe_roma.testbed.control.plant import ControlConfig
    from moe_roma.testbed.control.readouts import target_distance

    gates = json.loads((RESULTS / "doses" / f"{name}.json").read_text(encoding="utf-8"))
    config = ControlConfig(**gates["build"]["config"])
    folder = RUNS / name
    corrupted, tok = load_model(str(folder / "model"), dtype="float32", device="cpu")
    clean, _ = load_model(str(clean_model_path(config)), dtype="float32", device="cpu")
    train = load_examples(folder / "data" / "train.jsonl")
    items = [ex for s in SPLITS for ex in load_examples(folder / "data" / f"{s}_marked.jsonl")]
    return {"dose": name, **target_distance(corrupted, clean, tok, train, items, config.layers)}


def markdown(readouts: list[dict]) -> str:
    """One row per dose: the three distances, the share of the gap each target closes, the weight on
    marked neighbours, and the marked items' accuracy under each last-token routing."""

    def closed(r: dict, name: str) -> str:
        g = r["gap_closed"][name]
        if g["value"] is None:
            return "-"
        ci = f" [{g['ci'][0]:.2f}, {g['ci'][1]:.2f}]" if g["ci"] else ""
        return f"{g['value']:.2f}{ci}"

    lines = [
        "| dose | distance from clean: corrupted | RoMA's target | target, clean neighbours | gap closed: "
        "target | target, clean neighbours | marked-neighbour weight | accuracy: corrupted | target | "
        "target, clean neighbours |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in readouts:
        d, acc = r["distance"], r["accuracy"]
        names = ("corrupted", "target", "target_clean_neighbours")
        cells = [
            r["dose"],
            *(f"{d[n]:.3f}" for n in names),
            *(closed(r, n) for n in names[1:]),
            f"{r['marked_neighbour_weight']:.2f}",
            *(f"{100 * acc[n]['accuracy']:.1f}" for n in names),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("doses", nargs="*", help="dose names (default: every built dose)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    from moe_roma.io.atomic import write_json_atomic, write_text_atomic

    torch.set_num_threads(args.threads)
    names = args.doses or [dose_name(b, s) for b, s in DOSES]
    missing = [n for n in names if not (RUNS / n / "model").is_dir()]
    if missing:
        print(
            f"error: {', '.join(missing)} not built under {RUNS} (scripts/control_pipeline.sh build)",
            file=sys.stderr,
        )
        return 2
    readouts = []
    for name in names:
        readouts.append(dose_distance(name))
        print(markdown(readouts[-1:]).splitlines()[-1], flush=True)
    write_json_atomic(RESULTS / "target_distance.json", readouts)
    write_text_atomic(RESULTS / "target_distance.md", markdown(readouts))
    print(markdown(readouts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
