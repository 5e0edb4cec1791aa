"""TEMPORARY ALIAS (redesign in progress): moe_roma.pipeline moved to moe_roma.experiments.comparison."""

import sys

import moe_roma.experiments.comparison as _moved

sys.modules[__name__] = _moved
