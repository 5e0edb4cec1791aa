"""TEMPORARY ALIAS (redesign in progress): moe_roma.train.batches moved to moe_roma.methods.common.batches."""

import sys

import moe_roma.methods.common.batches as _moved

sys.modules[__name__] = _moved
