"""Write the train_large comparison and size-curve experiment files from the sweep's picks (issue 28).

    python scripts/large_comparison.py results/sweep-downstream-large

Pre-registered design (docs/findings.md, "The paper's regime"): the picks are each family's best
validation setting in the sweep (`scripts/select_settings.py`, ties to the one listed first), so
nothing below is chosen by a method's result on the evaluation splits.

- configs/compare-downstream-large.yaml, 5 seeds on in_dist, shifted and heldout_tasks: base, router
  tuning (pick), RoMA (pick), RoMA with the paper's exact settings (the sweep's `roma[paper]`), and two
  ablations of the RoMA pick, random neighbours and the TF-IDF embedder (no stronger sentence embedder
  ships offline). Paired McNemar tests of RoMA against router tuning and base, and of each ablation and
  the paper's settings against the RoMA pick.
- configs/size-curve-downstream-large.yaml, 3 seeds on shifted and heldout_tasks: router tuning and
  RoMA at their picks on seeded subsets of train_large of about 960, 5k and 15k items
  (`train_fraction`). A warm-up given in steps becomes the same share of the steps, so that a small
  set still leaves its warm-up. The curve's point at all 49,000 items is the comparison's seeds 0-2,
  which train exactly as the picks did; `scripts/size_curve.py` joins the two.

The train-fit table (each comparison run on items it trained on, the first 2,000 of train_large,
paired against the base) comes after the comparison:

    roma testbed export --testbed downstream --splits train_large --train-size 2000 --out /tmp/fit-data
    bash scripts/train_fit.sh results/compare-downstream-large /tmp/fit-data/train_large.jsonl \
        results/compare-downstream-large-train-fit
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "configs" / "sweep-downstream-large.yaml"
CONFIGS = ROOT / "configs"
TRAIN_LARGE = 49_000  # items in train_large (docs/testbed.md)
SIZES = [960, 5_000, 15_000, TRAIN_LARGE]
FULL_SIZE_SEEDS = [0, 1, 2]  # the size curve's seeds; at the full size they are the comparison's
STEP_WARMUPS = {"schedule.warmup_steps": "schedule.warmup_ratio"}
LAM_WARMUPS = {"regularizer.lam_warmup_steps": "regularizer.lam_warmup_ratio"}


def full_steps(train: dict) -> int:
    """Optimiser steps of a run on all of train_large with the sweep's schedule."""
    schedule = train["schedule"]
    return schedule["epochs"] * -(-TRAIN_LARGE // schedule["batch_size"])


def picks(results: Path, sweep: dict) -> dict[str, dict]:
    """Each family's picked method entry of the sweep file (name and overrides)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from select_settings import best_settings

    rows = json.loads((results / "results.json").read_text(encoding="utf-8"))["rows"]
    best = best_settings(rows, "validation")
    entries = {m["name"]: m for m in sweep["methods"]}
    return {family: entries[best[family]["method"]] for family in ("router_tuning", "roma")}


def as_shares(overrides: dict, train: dict) -> dict:
    """The overrides with each warm-up given in steps turned into the same share of the full run."""
    out = dict(overrides)
    steps = full_steps(train)
    for key, ratio_key in {**STEP_WARMUPS, **LAM_WARMUPS}.items():
        section, leaf = key.split(".")
        given = out.get(key, train.get(section, {}).get(leaf))
        if given:
            out[key], out[ratio_key] = None, round(given / steps, 6)
    return out


def comparison(sweep: dict, pick: dict[str, dict]) -> dict:
    paper = next(m for m in sweep["methods"] if m["name"] == "roma[paper]")
    methods = [
        {"name": "base", "kind": "base"},
        {"name": "router_tuning", "kind": "train", "overrides": pick["router_tuning"]["overrides"]},
        {"name": "roma", "kind": "train", "overrides": pick["roma"]["overrides"]},
        {"name": "roma_paper", "kind": "train", "overrides": paper["overrides"]},
    ]
    return {
        "name": "compare-downstream-large",
        "data": {
            "testbed": "downstream",
            "train_split": "train_large",
            "splits": ["in_dist", "shifted", "heldout_tasks"],
        },
        "scoring": sweep["scoring"],
        "seeds": [0, 1, 2, 3, 4],
        "metrics_split": "in_dist",
        "train": sweep["train"],
        "methods": methods,
        "ablations": [
            {
                "base": "roma",
                "axis": "graph.random_neighbours",
                "values": [True],
                "label": "roma[random_neighbours]",
            },
            {"base": "roma", "axis": "graph.embedder", "values": ["tfidf"], "label": "roma[tfidf]"},
        ],
        "paired": [
            ["roma", "router_tuning"],
            ["roma", "base"],
            ["router_tuning", "base"],
            ["roma_paper", "roma"],
            ["roma[random_neighbours]", "roma"],
            ["roma[tfidf]", "roma"],
        ],
    }


def size_curve(sweep: dict, pick: dict[str, dict]) -> dict:
    """Router tuning and RoMA at their picks on seeded subsets of train_large smaller than all of it.

    The full size is the comparison's seeds 0-2 of the same picks (``FULL_SIZE_SEEDS``), read by
    ``scripts/size_curve.py``: the same runs, not trained twice."""
    methods = [
        {
            "name": f"{family}[n={n}]",
            "kind": "train",
            "overrides": {
                **as_shares(pick[family]["overrides"], sweep["train"]),
                "train_fraction": round(n / TRAIN_LARGE, 6),
            },
        }
        for family in ("router_tuning", "roma")
        for n in SIZES[:-1]
    ]
    return {
        "name": "size-curve-downstream-large",
        "data": {
            "testbed": "downstream",
            "train_split": "train_large",
            "splits": ["shifted", "heldout_tasks"],
        },
        "scoring": sweep["scoring"],
        "seeds": FULL_SIZE_SEEDS,
        "metrics_split": "shifted",
        "train": sweep["train"],
        "methods": [{"name": "base", "kind": "base"}, *methods],
    }


def write(config: dict, header: str, folder: Path = CONFIGS) -> Path:
    path = folder / f"{config['name']}.yaml"
    body = yaml.safe_dump(config, sort_keys=False, width=110)
    path.write_text(header.strip() + "\n" + body, encoding="utf-8")
    return path


def main(results: Path, folder: Path = CONFIGS) -> list[Path]:
    sweep = yaml.safe_load(SWEEP.read_text(encoding="utf-8"))
    pick = picks(results, sweep)
    names = ", ".join(p["name"] for p in pick.values())
    header = f"# Generated by scripts/large_comparison.py from {results} (picks: {names})."
    return [write(comparison(sweep, pick), header, folder), write(size_curve(sweep, pick), header, folder)]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    print(*main(Path(sys.argv[1])), sep="\n")
