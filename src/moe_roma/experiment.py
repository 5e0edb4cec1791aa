"""TEMPORARY ALIAS (redesign in progress): moe_roma.experiment moved to moe_roma.experiments.grid."""

import sys

import moe_roma.experiments.grid as _moved

sys.modules[__name__] = _moved
