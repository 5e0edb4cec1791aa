"""TEMPORARY ALIAS (redesign in progress): moe_roma.routing.capture moved to moe_roma.models.hooks.capture."""

import sys

import moe_roma.models.hooks.capture as _moved

sys.modules[__name__] = _moved
