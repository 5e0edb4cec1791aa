"""TEMPORARY ALIAS (redesign in progress): moe_roma.train.schedules moved to moe_roma.methods.roma.schedules."""

import sys

import moe_roma.methods.roma.schedules as _moved

sys.modules[__name__] = _moved
