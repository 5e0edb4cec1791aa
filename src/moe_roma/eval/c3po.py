"""TEMPORARY ALIAS (redesign in progress): moe_roma.eval.c3po moved to moe_roma.methods.c3po."""

import sys

import moe_roma.methods.c3po as _moved

sys.modules[__name__] = _moved
