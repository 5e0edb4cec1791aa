"""The positive control's readouts from its finished doses (docs/control.md, "Readouts").

Reads results/control/<dose>/ (each dose's experiment), results/control/ceiling/ (the clean routers
on the same files), results/control/doses/<dose>.json (the gates, measured before any method) and
runs/control/<dose>/ (the corrupted model and its data); writes results/control/readouts.json,
results/control/table.md, results/control/dose_response.png and results/control/calibration.json
(each dose with a `roma diagnose` report as a calibration point, beside the two testbeds', and the
target margin against RoMA's gain over router tuning across them). Doses whose experiment has not
finished are listed as missing.

    PYTHONPATH=src python scripts/control_readouts.py --threads 1
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


def trained_runs(experiment: Path) -> dict[str, list[Path]]:
    """Each trained method's run folders (one per seed) of a dose's experiment."""
    runs = experiment / "runs"
    if not runs.is_dir():
        return {}
    return {m.name: sorted(m.glob("seed*")) for m in sorted(runs.iterdir()) if m.is_dir()}


def dose_readout(beta: float, share: float) -> dict | None:
    """Everything the control reports for one dose, or None while its experiment is unfinished."""
    from moe_roma.data.loaders import load_examples
    from moe_roma.models.loading import load_model
    from moe_roma.testbed.control.build import clean_model_path
    from moe_roma.testbed.control.plant import ControlConfig
    from moe_roma.testbed.control.readouts import dose_table, last_token_repair, routing_movement

    name = dose_name(beta, share)
    experiment = RESULTS / name
    if not (experiment / "results.json").is_file():
        return None
    gates = json.loads((RESULTS / "doses" / f"{name}.json").read_text(encoding="utf-8"))
    config = ControlConfig(**gates["build"]["config"])
    folder = RUNS / name
    corrupted, tok = load_model(str(folder / "model"), dtype="float32", device="cpu")
    clean, _ = load_model(str(clean_model_path(config)), dtype="float32", device="cpu")
    items = [ex for s in SPLITS for ex in load_examples(folder / "data" / f"{s}_marked.jsonl")]
    tt = gates["target_test"]
    return {
        "dose": name,
        "beta": beta,
        "marked_share": share,
        "rows": dose_table(experiment, RESULTS / "ceiling"),
        "movement": routing_movement(corrupted, clean, tok, items, trained_runs(experiment), config.layers),
        "last_token_repair": last_token_repair(corrupted, clean, tok, items, config.layers),
        "paired": json.loads((experiment / "results.json").read_text(encoding="utf-8"))["paired"],
        "target_test": {
            "net": tt["targets"]["roma"]["net"]["diff"],
            "net_ci": tt["targets"]["roma"]["net"]["ci"],
            "margin": tt["margin"]["fixed_diff"],
            "margin_ci": tt["margin"]["ci"],
        },
        "gates": {k: v["pass"] for k, v in gates["gates"].items()},
    }


CALIBRATION_ROMA = "roma_lam0.8"  # a dose's calibration point takes RoMA at the paper's lambda


def _paired(readout: dict, method: str) -> dict[str, tuple[float, float, float]]:
    """``method`` against router tuning on each marked split: (mean, low, high) in accuracy points."""
    return {
        p["split"].removesuffix("_marked"): tuple(100 * x for x in (p["mean_diff"], *p["ci"]))
        for p in readout["paired"]
        if p["a"] == method and p["b"] == "router_tuning" and p["split"].endswith("_marked")
    }


def calibration_point(readout: dict, report: dict) -> dict:
    """A dose as a `roma diagnose` calibration point, in ``diagnose.verdict.CALIBRATION``'s shape:
    the diagnose report on its RoMA training set, the gates' target test on the held-out marked
    items, and RoMA (``CALIBRATION_ROMA``) against router tuning on the marked splits."""
    signal, tt = report.get("correctness_signal") or {}, report["target_test"]
    auc = {k: (signal.get(k) or {}).get("mean") for k in ("auc_routing", "auc_embedding")}
    held = readout["target_test"]
    return {
        "table": f"results/control/{readout['dose']}",
        "successful_share": report["success"]["share"],
        **auc,
        "routing_margin": auc["auc_routing"] - auc["auc_embedding"] if None not in auc.values() else None,
        "target_test": {
            "train": {
                "base": 100 * tt["base"]["share"],
                "roma": 100 * tt["targets"]["roma"]["accuracy"]["share"],
                "net": 100 * tt["targets"]["roma"]["net"]["diff"],
                "margin": 100 * tt["margin"]["fixed_diff"],
            },
            "marked": {"net": 100 * held["net"], "margin": 100 * held["margin"]},
        },
        "roma_vs_router_tuning": _paired(readout, CALIBRATION_ROMA),
    }


def margin_against_gain(points: dict[str, dict]) -> dict:
    """The target margin against RoMA's gain over router tuning, one pair per calibration point (the
    held-out margin: the control's marked items, a testbed's in_dist); their rank correlation."""
    from moe_roma.testbed.control.readouts import rank_correlation

    pairs = {}
    for name, point in points.items():
        held = point["target_test"].get("marked") or point["target_test"]["in_dist"]
        gains = [mean for mean, _, _ in point["roma_vs_router_tuning"].values()]
        if gains:
            pairs[name] = (held["margin"], sum(gains) / len(gains))
    out = {"pairs": pairs}
    if len(pairs) >= 3:
        x, y = zip(*pairs.values())
        out["spearman"] = rank_correlation(x, y)
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _versus(cmp: dict | None, scale: float, fmt: str) -> str:
    """A difference against the reference method with its interval, or '-'."""
    if not cmp or cmp.get("ci") is None:
        return "-"
    d, (lo, hi) = (scale * cmp["diff"], [scale * x for x in cmp["ci"]])
    return f"{d:+{fmt}} [{lo:+{fmt}}, {hi:+{fmt}}]"


def table(readouts: list[dict]) -> str:
    """The recovery table per dose: marked and plain accuracy, recovery with its interval, routing."""
    lines = [
        "| dose | method | seeds | marked | plain | plain change | recovery [95% CI] | marked vs router "
        "tuning [95% CI] | routing distance before → after | after vs router tuning [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in readouts:
        for row in r["rows"]:
            rec = row["recovery"]
            ci = f"[{rec['ci'][0]:+.2f}, {rec['ci'][1]:+.2f}]" if rec["ci"] else "-"
            move = r["movement"].get(row["method"])
            dist = f"{move['before']:.3f} → {move['after']:.3f}" if move else "-"
            lines.append(
                f"| {r['dose']} | {row['method']} | {row['seeds']} | {_pct(row['marked'])} | "
                f"{_pct(row['plain'])} | {100 * row['plain_change']:+.1f} | {rec['value']:+.2f} {ci} | "
                f"{_versus(row.get('vs_reference'), 100, '.1f')} | {dist} | "
                f"{_versus((move or {}).get('vs_reference'), 1, '.3f')} |"
            )
    return "\n".join(lines) + "\n"


def _net(tt: dict) -> str:
    """The gates' target test on the marked items: RoMA's target against the corrupted routing, points."""
    lo, hi = (100 * x for x in tt["net_ci"])
    return f"{100 * tt['net']:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def repair_table(readouts: list[dict]) -> str:
    """Where the planted damage lies, per dose: the marked items with the last prompt token's routing in
    the tuned layers repaired alone, and corrupted alone (``last_token_repair``)."""
    lines = [
        "| dose | clean | corrupted | corrupted, clean last-token routing | share repaired [95% CI] | "
        "clean, corrupted last-token routing | share of the drop from that token [95% CI] | "
        "RoMA's target, net vs corrupted [95% CI] (gates) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def share(x: dict) -> str:
        ci = f" [{x['ci'][0]:+.2f}, {x['ci'][1]:+.2f}]" if x["ci"] else ""
        return f"{x['value']:+.2f}{ci}"

    for r in readouts:
        rep = r.get("last_token_repair")
        if not rep:
            continue
        acc = {k: _pct(rep[k]["accuracy"]) for k in ("clean", "corrupted")}
        lines.append(
            f"| {r['dose']} | {acc['clean']} | {acc['corrupted']} | "
            f"{_pct(rep['corrupted_with_clean_last_token']['accuracy'])} | {share(rep['share_repaired'])} | "
            f"{_pct(rep['clean_with_corrupted_last_token']['accuracy'])} | "
            f"{share(rep['share_from_last_token'])} | {_net(r['target_test'])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    from moe_roma.testbed.control.readouts import plot_dose_response, preregistered_verdict

    torch.set_num_threads(args.threads)
    readouts, missing = [], []
    for beta, share in DOSES:
        r = dose_readout(beta, share)
        (readouts if r else missing).append(r or dose_name(beta, share))
    from moe_roma.diagnose.verdict import CALIBRATION

    points = dict(CALIBRATION)
    for r in readouts:
        report = RESULTS / "diagnose" / r["dose"] / "report.json"
        if report.is_file():
            points[f"control {r['dose']}"] = calibration_point(
                r, json.loads(report.read_text(encoding="utf-8"))
            )
    calibration = {"points": points, "margin_against_gain": margin_against_gain(points)}
    (RESULTS / "calibration.json").write_text(json.dumps(calibration, indent=1), encoding="utf-8")
    # The pre-registration's criteria; with doses missing it is the verdict so far, and says so.
    verdict = {**preregistered_verdict(readouts), "doses_missing": missing}
    out = {"doses": readouts, "missing": missing, "preregistered_verdict": verdict}
    (RESULTS / "readouts.json").write_text(json.dumps(out, indent=1, default=str), encoding="utf-8")
    (RESULTS / "table.md").write_text(
        table(readouts) + "\nWhere the damage lies (pooled marked items):\n\n" + repair_table(readouts),
        encoding="utf-8",
    )
    if any(r["marked_share"] == 0.5 for r in readouts):  # the curve is over beta at the 50% share
        plot_dose_response(readouts, RESULTS / "dose_response.png")
    print(table(readouts))
    print(repair_table(readouts))
    print("missing doses:", ", ".join(missing) or "none")
    print(
        f"pre-registered verdict: {verdict['label']} (target test passes at: "
        f"{', '.join(verdict['passing_doses']) or 'no dose'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
