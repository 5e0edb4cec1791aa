"""TEMPORARY ALIAS (redesign in progress): moe_roma.train.prefix moved to moe_roma.methods.common.prefix."""

import sys

import moe_roma.methods.common.prefix as _moved

sys.modules[__name__] = _moved
