"""Build one dose of the positive control (model, data files, gates) and print its gates (docs/control.md).

Calibration only: the base model and the clean routers, never a method's result.

    PYTHONPATH=src python scripts/control_calibrate.py --beta 1 --out /tmp/control-b1
    PYTHONPATH=src python scripts/control_calibrate.py --beta 1 --epochs 10 --lr 1e-2 \\
        --out /tmp/control-b1-e10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from moe_roma.models.loading import load_model
from moe_roma.testbed.control import ControlConfig, ControlDose, build_control, measure_gates
from moe_roma.testbed.control.build import clean_model_path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(ControlConfig):
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    ap.add_argument("--marked-share", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--gates-only", action="store_true", help="measure the gates of the model already in --out"
    )
    ap.add_argument("--overwrite", action="store_true", help="replace the control folder --out")
    ap.add_argument("--planted", type=Path, help="reuse the corrupted model of this control folder")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = ControlConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ControlConfig)})
    dose = ControlDose(config, args.marked_share, config.seed)
    if args.gates_only:
        clean, tok = load_model(str(clean_model_path(config)), dtype="float32", device="cpu")
        corrupted, _ = load_model(str(args.out / "model"), dtype="float32", device="cpu")
        recorded = args.out / "model" / "build.json"
        old = recorded if recorded.is_file() else args.out / "build.json"
        build = json.loads((old if old.is_file() else args.out / "gates.json").read_text())
        gates = measure_gates(
            clean,
            corrupted,
            tok,
            config.layers,
            args.marked_share,
            config.seed,
            print,
            config.marker_position,
            config.marker_sentences,
        )
        gates["build"] = build.get("build", build)
        (args.out / "gates.json").write_text(json.dumps(gates, indent=1, default=str))
    else:
        gates = build_control(args.out, dose, overwrite=args.overwrite, log=print, planted=args.planted)
    for name, gate in gates["gates"].items():
        print(name, {k: round(v, 3) if isinstance(v, float) else v for k, v in gate.items()})
    print(json.dumps(gates["pooled"]), gates["roma_training_set"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
