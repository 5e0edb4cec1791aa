"""TEMPORARY ALIAS (redesign in progress): moe_roma.atomic moved to moe_roma.io.atomic."""

import sys

import moe_roma.io.atomic as _moved

sys.modules[__name__] = _moved
