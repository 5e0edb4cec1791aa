"""TEMPORARY ALIAS (redesign in progress): moe_roma.eval.scoring moved to moe_roma.scoring.engine."""

import sys

import moe_roma.scoring.engine as _moved

sys.modules[__name__] = _moved
