"""TEMPORARY ALIAS (redesign in progress): moe_roma.demo moved to moe_roma.experiments.demo."""

import sys

import moe_roma.experiments.demo as _moved

sys.modules[__name__] = _moved
