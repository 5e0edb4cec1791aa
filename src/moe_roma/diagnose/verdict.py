"""The verdict of ``roma diagnose``: likely to help / unlikely to help / cannot tell, in plain words.

The rule rests on the project's two calibration points, the ``in-domain`` and ``downstream``
testbeds (docs/diagnose.md): each one's RoMA training set measured by ``roma diagnose``, beside
how RoMA did there over 5 seeds (``results/paper-table*``). On neither did RoMA's 95% interval over
router tuning lie above zero on any split, and it was below the base on every split but one. So the
rule can recognise what those two had in common, and it never says "likely to help": no measured
point supports it yet.

What the two had in common is the quantity RoMA's mechanism needs. RoMA moves an item's routing
towards its successful neighbours'; that can only change answers if routing says something about
correctness that the question itself does not. On both testbeds a k-NN on routing predicted
correctness *worse* than a k-NN on the question embeddings (``routing_margin`` < 0), and, where the
oracle was sampled, the oracle's routing change pointed no more towards the successful neighbours
than towards random successful items (``pull_margin`` near 0).
"""

from __future__ import annotations

# Measured on each testbed's RoMA training set (960 items) with `roma diagnose --oracle 960` (docs/diagnose.md),
# beside RoMA's paired difference from router tuning in the testbed's paper table over 5 seeds
# (results/paper-table*/results.json: mean and 95% t-interval, accuracy points, per split).
CALIBRATION: dict[str, dict] = {
    "in-domain": {
        "table": "results/paper-table", "successful_share": 0.834, "auc_routing": 0.823, "auc_embedding": 0.836,
        "routing_margin": -0.013, "pull_margin": 0.011,
        "roma_vs_router_tuning": {"in_dist": (-1.4, -2.1, -0.8), "shifted": (-1.1, -1.3, -0.8),
                                  "heldout_tasks": (0.1, -0.4, 0.6)},
    },
    "downstream": {
        "table": "results/paper-table-downstream", "successful_share": 0.551, "auc_routing": 0.668,
        "auc_embedding": 0.716, "routing_margin": -0.048, "pull_margin": -0.012,
        "roma_vs_router_tuning": {"in_dist": (0.6, -0.2, 1.4), "shifted": (-1.6, -2.7, -0.5),
                                  "heldout_tasks": (-1.7, -2.5, -0.9)},
    },
}  # fmt: skip


def helped(point: dict) -> bool:
    """RoMA helped at a calibration point when its interval over router tuning lies above 0 on some split."""
    return any(low > 0 for _, low, _ in point["roma_vs_router_tuning"].values())


# Both calibration points lie at or below these; a model above either lies outside what was measured.
ROUTING_MARGIN_MAX = 0.0
PULL_MARGIN_MAX = 0.05

CAVEAT = (
    "This verdict rests on two calibration points, the project's in-domain and downstream testbeds "
    "(docs/diagnose.md), on neither of which RoMA beat router tuning beyond noise; with no measured case "
    "where RoMA helped, it never says 'likely to help'. Treat it as a prior, and confirm on a validation split."
)


def verdict(report: dict) -> dict:
    """``{"label", "why", "caveat", "drivers"}`` for a ``diagnose_routing`` report (with ``oracle`` if sampled)."""
    drivers: dict[str, float] = {}
    if report.get("cannot_tell"):
        return {"label": "cannot tell", "why": "; ".join(report["cannot_tell"]) + ".", "caveat": CAVEAT,
                "drivers": drivers}  # fmt: skip
    signal = report.get("correctness_signal") or {}
    if not signal.get("auc_routing"):
        reason = signal.get("reason", "correctness could not be predicted")
        return {"label": "cannot tell", "why": f"{reason}.", "caveat": CAVEAT, "drivers": drivers}
    auc_r, auc_e = signal["auc_routing"]["mean"], signal["auc_embedding"]["mean"]
    drivers["routing_margin"] = auc_r - auc_e
    direction = (report.get("oracle") or {}).get("direction") or {}
    if "cos_change_pull" in direction:
        drivers["pull_margin"] = direction["cos_change_pull"] - direction["cos_change_random_pull"]
    share = report["success"]["share"]
    numbers = (f"routing predicts correctness with ROC AUC {auc_r:.3f}, the question embeddings with {auc_e:.3f} "
               f"(margin {drivers['routing_margin']:+.3f}); {share:.0%} of the items are answered right")  # fmt: skip
    if "pull_margin" in drivers:
        numbers += (f"; the oracle's routing changes point towards the successful neighbours no more than towards "
                    f"random successful items (cosine margin {drivers['pull_margin']:+.3f})"
                    if drivers["pull_margin"] <= PULL_MARGIN_MAX else
                    f"; the oracle's routing changes point towards the successful neighbours more than towards random "
                    f"successful items (cosine margin {drivers['pull_margin']:+.3f})")  # fmt: skip
    inside = drivers["routing_margin"] <= ROUTING_MARGIN_MAX and drivers.get("pull_margin", 0.0) <= PULL_MARGIN_MAX
    if inside:
        why = (f"Like both calibration testbeds, where RoMA did not beat router tuning: {numbers}. Routing tells "
               "right from wrong no better than the question itself does, so pulling it towards similar questions' "
               "routing has no reason to fix answers.")  # fmt: skip
        return {"label": "unlikely to help", "why": why, "caveat": CAVEAT, "drivers": drivers}
    why = (f"Unlike both calibration testbeds: {numbers}. Routing here carries a signal that neither testbed "
           "had, and no calibration point shows what RoMA does with it; run a small validation sweep "
           "(configs/sweep-downstream.yaml is a template) before spending GPU hours.")  # fmt: skip
    return {"label": "cannot tell", "why": why, "caveat": CAVEAT, "drivers": drivers}
