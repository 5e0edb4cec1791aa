"""TEMPORARY ALIAS (redesign in progress): moe_roma.train.trainer moved to moe_roma.methods.roma.trainer."""

import sys

import moe_roma.methods.roma.trainer as _moved

sys.modules[__name__] = _moved
