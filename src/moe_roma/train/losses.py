"""TEMPORARY ALIAS (redesign in progress): moe_roma.train.losses moved to moe_roma.methods.common.losses."""

import sys

import moe_roma.methods.common.losses as _moved

sys.modules[__name__] = _moved
