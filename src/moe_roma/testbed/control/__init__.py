"""A positive control for RoMA: misrouting planted in the `downstream` testbed's tuned routers.

Marked items (a filler sentence before ``Question:``) are routed like another task family's items;
plain items keep their clean routing. Where the successful set is mostly plain items with clean
routing, RoMA's target for a marked item is clean routing of its own family: the precondition holds
by construction, and a working RoMA must move marked items back.

- ``setting``: the marker, the corruption pool (fresh content), the marked share, the partner map;
- ``plant``: train the corruption into the tuned routers (full, or rank one along the marker);
- ``gates``: the measurements that must pass before any method runs on the setting;
- ``build``: one dose on disk (corrupted model, data files, gates) for ``roma experiment``;
- ``readouts``: recovery, collateral damage, routing distance and the dose-response plot.
"""

from moe_roma.testbed.control.build import CONTROL_FOLDER, ControlDose, build_control, write_control_data
from moe_roma.testbed.control.gates import EVAL_SPLITS, collect_store, marked_target_test, measure_gates
from moe_roma.testbed.control.plant import ControlConfig, plant_misrouting, router_inputs
from moe_roma.testbed.control.setting import (
    MARKER,
    POOL_SEED,
    corruption_pool,
    is_marked,
    is_marked_id,
    mark,
    marked_share_split,
    marker_text,
    partner_family,
    partner_map,
)

__all__ = [
    "CONTROL_FOLDER",
    "ControlDose",
    "build_control",
    "write_control_data",
    "EVAL_SPLITS",
    "MARKER",
    "POOL_SEED",
    "ControlConfig",
    "collect_store",
    "corruption_pool",
    "is_marked",
    "is_marked_id",
    "mark",
    "marked_share_split",
    "marked_target_test",
    "marker_text",
    "measure_gates",
    "partner_family",
    "partner_map",
    "plant_misrouting",
    "router_inputs",
]
