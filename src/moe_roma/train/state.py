"""TEMPORARY ALIAS (redesign in progress): moe_roma.train.state moved to moe_roma.methods.roma.state."""

import sys

import moe_roma.methods.roma.state as _moved

sys.modules[__name__] = _moved
