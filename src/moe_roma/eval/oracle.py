"""TEMPORARY ALIAS (redesign in progress): moe_roma.eval.oracle moved to moe_roma.methods.oracle."""

import sys

import moe_roma.methods.oracle as _moved

sys.modules[__name__] = _moved
