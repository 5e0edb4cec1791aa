"""Build the positive control's task-routed host and measure its gate 0 (docs/control.md, step 12).

Calibration only: the downstream testbed model and the host, never a method's result.

    PYTHONPATH=src python scripts/control_host.py --threads 1 --out runs/control/host
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from moe_roma.testbed.control.host import HostConfig, build_host


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(HostConfig):
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--overwrite", action="store_true", help="replace the host folder --out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = HostConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(HostConfig)})
    record = build_host(args.out, config, overwrite=args.overwrite, log=print)
    tt = record["gate0"]["target_test"]
    print(f"host accuracy on plain evaluation items: {tt['base']['share']:.1%} ({tt['n']} items)")
    for name, t in tt["targets"].items():
        net = t["net"]
        print(f"{name}: {t['accuracy']['share']:.1%} (net {100 * net['diff']:+.1f}, ci {net['ci']})")
    print("gate 0:", json.dumps({k: v for k, v in record["gate0"].items() if k != "target_test"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
