"""TEMPORARY ALIAS (redesign in progress): moe_roma.eval.stats moved to moe_roma.scoring.stats."""

import sys

import moe_roma.scoring.stats as _moved

sys.modules[__name__] = _moved
