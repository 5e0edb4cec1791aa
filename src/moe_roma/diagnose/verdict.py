"""The verdict of ``roma diagnose``: likely to help / unlikely to help / cannot tell, in plain words.

**The target test decides** (``moe_roma.diagnose.target_test``, with ``--model``). RoMA pulls each
item's routing towards its successful neighbours' kernel mean; that pull can only gain where the
target is better routing than the item's own. So:

- *unlikely to help* when, with the routing set to RoMA's target, the model does not answer better
  than with its own routing (the net change's 95% interval does not lie above 0), or the target
  does not fix more failed items than k random successful items do (the margin's interval does
  not lie above 0);
- *likely to help* only where a calibration point supports it: a measured model where RoMA beat
  router tuning beyond noise, whose target test this model's meets or exceeds;
- *cannot tell* otherwise (too few failed items, or a target test that passes with no calibration
  point to say what training then does), with the numbers.

Without ``--model`` the verdict rests on the indirect measures, kept as secondary evidence: both
calibration testbeds had routing that predicts correctness no better than the question
(``routing_margin`` < 0) and, where the oracle was sampled, oracle changes that point no more
towards the neighbours than towards random successful items (``pull_margin`` near 0).
"""

from __future__ import annotations

# Each testbed's RoMA training set measured by `roma diagnose` (docs/diagnose.md), beside how RoMA did against
# router tuning in the testbed's paper table over 5 seeds (results/paper-table*/results.json: mean and 95%
# t-interval, accuracy points, per split). `target_test`: the target test's figures (accuracy points) on the
# training items themselves and on in_dist, neighbours from the training set (docs/diagnose.md gives the
# commands).
CALIBRATION: dict[str, dict] = {
    "in-domain": {
        "table": "results/paper-table",
        "successful_share": 0.834,
        "auc_routing": 0.823,
        "auc_embedding": 0.836,
        "routing_margin": -0.013,
        "pull_margin": 0.011,
        "target_test": {
            "train": {"base": 83.4, "roma": 74.6, "net": -8.9, "margin": -2.5},
            "in_dist": {"base": 82.5, "roma": 75.0, "net": -7.5, "margin": 3.2},
        },
        "roma_vs_router_tuning": {
            "in_dist": (-1.4, -2.1, -0.8),
            "shifted": (-1.1, -1.3, -0.8),
            "heldout_tasks": (0.1, -0.4, 0.6),
        },
    },
    "downstream": {
        "table": "results/paper-table-downstream",
        "successful_share": 0.551,
        "auc_routing": 0.668,
        "auc_embedding": 0.716,
        "routing_margin": -0.048,
        "pull_margin": -0.012,
        "target_test": {
            "train": {"base": 55.1, "roma": 47.6, "net": -7.5, "margin": -0.2},
            "in_dist": {"base": 56.7, "roma": 47.2, "net": -9.4, "margin": -1.3},
        },
        "roma_vs_router_tuning": {
            "in_dist": (0.6, -0.2, 1.4),
            "shifted": (-1.6, -2.7, -0.5),
            "heldout_tasks": (-1.7, -2.5, -0.9),
        },
    },
    # The positive control's doses (docs/control.md): each dose's `roma diagnose` report on its RoMA
    # training set, its gates' target test on the held-out marked items, and RoMA at lambda 0.8 against
    # router tuning on the marked splits (scripts/control_readouts.py writes them to calibration.json).
    "control b0.00-s50": {
        "table": "results/control/b0.00-s50",
        "successful_share": 0.41,
        "auc_routing": 0.717,
        "auc_embedding": 0.721,
        "routing_margin": -0.004,
        "target_test": {
            "train": {"base": 41.0, "roma": 40.9, "net": -0.1, "margin": -7.4},
            "marked": {"net": -0.7, "margin": -7.3},
        },
        "roma_vs_router_tuning": {
            "in_dist": (-0.3, -5.8, 5.2),
            "shifted": (0.4, -7.1, 7.8),
            "heldout_tasks": (-0.9, -7.1, 5.3),
        },
    },
    "control b0.25-s50": {
        "table": "results/control/b0.25-s50",
        "successful_share": 0.412,
        "auc_routing": 0.683,
        "auc_embedding": 0.704,
        "routing_margin": -0.021,
        "target_test": {
            "train": {"base": 41.2, "roma": 40.7, "net": -0.5, "margin": -6.4},
            "marked": {"net": 1.1, "margin": -4.4},
        },
        "roma_vs_router_tuning": {
            "in_dist": (-1.9, -5.8, 1.9),
            "shifted": (2.4, -0.4, 5.2),
            "heldout_tasks": (0.4, -6.3, 7.1),
        },
    },
    "control b0.50-s50": {
        "table": "results/control/b0.50-s50",
        "successful_share": 0.412,
        "auc_routing": 0.698,
        "auc_embedding": 0.724,
        "routing_margin": -0.025,
        "target_test": {
            "train": {"base": 41.2, "roma": 40.2, "net": -1.0, "margin": -5.5},
            "marked": {"net": 1.8, "margin": -1.5},
        },
        "roma_vs_router_tuning": {
            "in_dist": (0.7, -5.4, 6.9),
            "shifted": (-0.1, -1.1, 1.0),
            "heldout_tasks": (0.1, -5.8, 6.0),
        },
    },
    "control b0.75-s50": {
        "table": "results/control/b0.75-s50",
        "successful_share": 0.418,
        "auc_routing": 0.685,
        "auc_embedding": 0.704,
        "routing_margin": -0.019,
        "target_test": {
            "train": {"base": 41.8, "roma": 39.3, "net": -2.5, "margin": -3.4},
            "marked": {"net": 1.6, "margin": -0.1},
        },
        "roma_vs_router_tuning": {
            "in_dist": (-0.7, -7.0, 5.5),
            "shifted": (-1.3, -5.1, 2.5),
            "heldout_tasks": (1.8, -1.2, 4.7),
        },
    },
    "control b1.00-s50": {
        "table": "results/control/b1.00-s50",
        "successful_share": 0.404,
        "auc_routing": 0.669,
        "auc_embedding": 0.706,
        "routing_margin": -0.037,
        "target_test": {
            "train": {"base": 40.4, "roma": 39.0, "net": -1.5, "margin": -1.7},
            "marked": {"net": 2.3, "margin": 1.1},
        },
        "roma_vs_router_tuning": {
            "in_dist": (-0.2, -3.6, 3.2),
            "shifted": (-0.5, -4.3, 3.3),
            "heldout_tasks": (0.4, -3.4, 4.2),
        },
    },
    "control b1.00-s25": {
        "table": "results/control/b1.00-s25",
        "successful_share": 0.425,
        "auc_routing": 0.697,
        "auc_embedding": 0.704,
        "routing_margin": -0.006,
        "target_test": {
            "train": {"base": 42.5, "roma": 42.3, "net": -0.2, "margin": -5.6},
            "marked": {"net": 3.5, "margin": 1.6},
        },
        "roma_vs_router_tuning": {
            "in_dist": (-1.7, -3.0, -0.3),
            "shifted": (-2.4, -9.1, 4.3),
            "heldout_tasks": (-2.2, -13.1, 8.7),
        },
    },
}


def helped(point: dict) -> bool:
    """RoMA helped at a calibration point when its interval over router tuning lies above 0 on some split."""
    return any(low > 0 for _, low, _ in point["roma_vs_router_tuning"].values())


# Both calibration testbeds lie at or below these; a model above either lies outside what was measured.
ROUTING_MARGIN_MAX = 0.0
PULL_MARGIN_MAX = 0.05


def caveat(calibration: dict[str, dict]) -> str:
    """What the verdict rests on: the calibration points, split by whether RoMA helped there."""
    if not calibration:
        return "No calibration point is given, so this verdict never says 'likely to help'."
    won = [name for name, point in calibration.items() if helped(point)]
    lost = [name for name in calibration if name not in won]

    def names(group: list[str]) -> str:
        return ", ".join(group[:-1]) + (" and " if len(group) > 1 else "") + group[-1]

    where = []
    if won:
        where.append(f"RoMA beat router tuning beyond noise at {names(won)}")
    if lost:
        where.append(
            f"it did not at {names(lost)}"
            if won
            else f"RoMA beat router tuning at none of them ({names(lost)})"
        )
    return (
        f"This verdict rests on the project's {len(calibration)} calibration points (docs/diagnose.md): "
        + "; ".join(where)
        + ". It says 'likely to help' only where a measured point where RoMA helped supports it. Treat it "
        "as a prior, and confirm on a validation split."
    )


CAVEAT = caveat(CALIBRATION)


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}"


def target_numbers(tt: dict) -> str:
    """One sentence of the target test's decisive figures."""
    roma, base, m = tt["targets"]["roma"], tt["base"], tt["margin"]
    net = roma["net"]
    text = (
        f"with the last-token routing set to RoMA's target the model answers {roma['accuracy']['share']:.1%} "
        f"of {tt['n']} items against {base['share']:.1%} with its own routing (net {_pct(net['diff'])} "
        f"points, 95% interval [{_pct(net['ci'][0])}, {_pct(net['ci'][1])}])"
    )
    if m["too_few"]:
        return text + f"; only {m['n_failed']} items fail, too few to tell how many the target fixes"
    rnd = tt["targets"]["random"]["fixed"]
    return text + (
        f"; it fixes {roma['fixed']['share']:.1%} of the {m['n_failed']} failed items, k random "
        f"successful items fix {rnd['share']:.1%} (margin {_pct(m['fixed_diff'])} points "
        f"[{_pct(m['ci'][0])}, {_pct(m['ci'][1])}])"
    )


def target_drivers(tt: dict) -> dict[str, float]:
    out = {
        "target_net": tt["targets"]["roma"]["net"]["diff"],
        "target_net_low": tt["targets"]["roma"]["net"]["ci"][0],
    }
    if not tt["margin"]["too_few"]:
        out.update({"target_margin": tt["margin"]["fixed_diff"], "target_margin_low": tt["margin"]["ci"][0]})
    return out


def _supporting_point(drivers: dict[str, float], calibration: dict[str, dict]) -> str | None:
    """A calibration point where RoMA helped and whose own training-set target test this one meets."""
    for name, point in calibration.items():
        measured = (point.get("target_test") or {}).get("train")
        if not measured or not helped(point):
            continue
        if (
            drivers["target_net"] * 100 >= measured["net"]
            and drivers["target_margin"] * 100 >= measured["margin"]
        ):
            return name
    return None


def _target_verdict(report: dict, tt: dict, calibration: dict[str, dict]) -> dict:
    drivers = target_drivers(tt)
    note = caveat(calibration)
    numbers = target_numbers(tt)
    if tt["margin"]["too_few"]:
        return {
            "label": "cannot tell",
            "why": f"The target test cannot decide: {numbers}.",
            "caveat": note,
            "drivers": drivers,
        }
    beats_base = drivers["target_net_low"] > 0
    beats_random = drivers["target_margin_low"] > 0
    if not (beats_base and beats_random):
        fails = []
        if not beats_base:
            worse = tt["targets"]["roma"]["net"]["ci"][1] < 0  # worse beyond its interval, else no better
            fails.append(
                "RoMA's own target is " + ("worse" if worse else "no better") + " routing than the items' own"
            )
        if not beats_random:
            fails.append("its neighbours fix no more failed items than random successful items do")
        joined = "; and ".join(fails)
        why = (
            f"{joined[0].upper() + joined[1:]}: {numbers}. Training the routers towards that target has "
            "nothing to gain that the target itself does not show."
        )
        return {"label": "unlikely to help", "why": why, "caveat": note, "drivers": drivers}
    point = _supporting_point(drivers, calibration)
    if point:
        why = (
            f"RoMA's target routes better than the items' own and than random successful items: {numbers}. "
            f"At the calibration point '{point}', with a weaker target test than this, RoMA beat router "
            "tuning."
        )
        return {"label": "likely to help", "why": why, "caveat": note, "drivers": drivers}
    why = (
        "RoMA's target routes better than the items' own and than random successful items, which no "
        f"calibration point's training set showed: {numbers}. No measured point shows what training towards "
        "such a target does; run a small validation sweep (configs/sweep-downstream.yaml is a template) "
        "before spending GPU hours."
    )
    return {"label": "cannot tell", "why": why, "caveat": note, "drivers": drivers}


def _indirect_verdict(report: dict, suggest_model: bool = True) -> dict:
    """The verdict from the indirect measures alone (no ``--model``)."""
    drivers: dict[str, float] = {}
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
    numbers = (
        f"routing predicts correctness with ROC AUC {auc_r:.3f}, the question embeddings with {auc_e:.3f} "
        f"(margin {drivers['routing_margin']:+.3f}); {share:.0%} of the items are answered right"
    )
    if "pull_margin" in drivers:
        towards = "no more than" if drivers["pull_margin"] <= PULL_MARGIN_MAX else "more than"
        numbers += (
            f"; the oracle's routing changes point towards the successful neighbours {towards} towards "
            f"random successful items (cosine margin {drivers['pull_margin']:+.3f})"
        )
    direct = (
        " Give --model for the direct test (does RoMA's target route better?), which decides the verdict."
    )
    direct = direct if suggest_model else ""
    inside = (
        drivers["routing_margin"] <= ROUTING_MARGIN_MAX and drivers.get("pull_margin", 0.0) <= PULL_MARGIN_MAX
    )
    if inside:
        why = (
            f"Like both calibration testbeds, where RoMA did not beat router tuning: {numbers}. Routing "
            "tells right from wrong no better than the question itself does, so pulling it towards similar "
            "questions' routing has no reason to fix answers." + direct
        )
        return {"label": "unlikely to help", "why": why, "caveat": CAVEAT, "drivers": drivers}
    why = (
        f"Unlike both calibration testbeds: {numbers}. Routing here carries a signal that neither testbed "
        "had, and no calibration point shows what RoMA does with it." + direct
    )
    return {"label": "cannot tell", "why": why, "caveat": CAVEAT, "drivers": drivers}


def verdict(report: dict, calibration: dict[str, dict] | None = None) -> dict:
    """``{"label", "why", "caveat", "drivers"}`` for a ``diagnose_routing`` report, decided by its
    ``target_test`` when present, else by the indirect measures (and the ``oracle`` direction if sampled)."""
    if report.get("cannot_tell"):
        return {
            "label": "cannot tell",
            "why": "; ".join(report["cannot_tell"]) + ".",
            "caveat": CAVEAT,
            "drivers": {},
        }
    tt = report.get("target_test")
    if tt:
        out = _target_verdict(report, tt, CALIBRATION if calibration is None else calibration)
        secondary = _indirect_verdict(report, suggest_model=False)
        out["drivers"].update(secondary["drivers"])
        out["secondary"] = {"label": secondary["label"], "why": secondary["why"]}
        return out
    return _indirect_verdict(report)
