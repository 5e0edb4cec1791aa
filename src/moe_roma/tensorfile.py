"""TEMPORARY ALIAS (redesign in progress): moe_roma.tensorfile moved to moe_roma.io.tensorfile."""

import sys

import moe_roma.io.tensorfile as _moved

sys.modules[__name__] = _moved
