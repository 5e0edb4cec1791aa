"""TEMPORARY ALIAS (redesign in progress): moe_roma.errors moved to moe_roma.io.errors."""

import sys

import moe_roma.io.errors as _moved

sys.modules[__name__] = _moved
