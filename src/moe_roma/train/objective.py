"""TEMPORARY ALIAS (redesign in progress): moe_roma.train.objective moved to moe_roma.methods.common.forward."""

import sys

import moe_roma.methods.common.forward as _moved

sys.modules[__name__] = _moved
