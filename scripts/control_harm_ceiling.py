"""How much can misrouting of the planted kind cost marked items at all? (docs/control.md, calibration)

The clean downstream model's marked in_dist items (five-sentence marker) answered with their last-token
routing *set* to each target of the target test; the other-task control is the planted misrouting done
exactly. Clean model only: no corruption, no method.

    PYTHONPATH=src python scripts/control_harm_ceiling.py
"""

from __future__ import annotations

import torch

from moe_roma.models.loading import load_model
from moe_roma.testbed import load_testbed_splits, testbed_model_path
from moe_roma.testbed.control import mark, marked_share_split, marked_target_test

LAYERS = [3, 4, 5, 6, 7]  # the downstream testbed's tuned layers (last5)


def main() -> int:
    torch.set_num_threads(1)
    clean, tok = load_model(str(testbed_model_path("downstream")), dtype="float32", device="cpu")
    splits = load_testbed_splits(0, testbed="downstream")
    mixed = marked_share_split(splits["train"], 0.5, 0, "before_question", 5)
    marked = [mark(ex, "before_question", 5) for ex in splits["in_dist"]]
    tt, _, _ = marked_target_test(clean, tok, mixed, marked, LAYERS)
    print(f"clean model, marked in_dist ({tt['n']} items): own routing {tt['base']['share']:.1%}")
    for name, t in tt["targets"].items():
        print(f"{name}: {t['accuracy']['share']:.1%} ({100 * t['net']['diff']:+.1f} points)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
