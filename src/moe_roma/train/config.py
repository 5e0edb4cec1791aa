"""TEMPORARY ALIAS (redesign in progress): moe_roma.train.config moved to moe_roma.methods.roma.config."""

import sys

import moe_roma.methods.roma.config as _moved

sys.modules[__name__] = _moved
