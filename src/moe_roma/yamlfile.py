"""TEMPORARY ALIAS (redesign in progress): moe_roma.yamlfile moved to moe_roma.io.yamlfile."""

import sys

import moe_roma.io.yamlfile as _moved

sys.modules[__name__] = _moved
