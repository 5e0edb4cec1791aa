"""TEMPORARY ALIAS (redesign in progress): moe_roma.routing.override moved to moe_roma.models.hooks.override."""

import sys

import moe_roma.models.hooks.override as _moved

sys.modules[__name__] = _moved
