"""Every routing method by name, filled by the methods themselves.

Each method module calls ``methods.base.register(MethodSpec(...))`` when it is imported (the
contracts and the two kinds, *weights* and *test-time*, are described in ``methods/base.py``). This
module imports the built-in methods' modules by name (``BUILTIN``), so that it never imports a method
and no method imports it. Adding a method is a module that registers itself and its name in
``BUILTIN``; a method outside this package registers itself the same way, and is known from its
first import on.

>>> sorted(METHODS)
['base', 'c3po', 'oracle', 'train']
>>> METHODS["oracle"].config().steps
20
"""

from __future__ import annotations

import importlib

from moe_roma.io.errors import RomaError
from moe_roma.methods.base import MethodSpec, registered

# The modules of the built-in methods, in the order their names are listed (after ``base``).
BUILTIN = ("moe_roma.methods.roma.trainer", "moe_roma.methods.oracle", "moe_roma.methods.c3po")

for _module in BUILTIN:
    importlib.import_module(_module)

METHODS: dict[str, MethodSpec] = registered()


def method(name: str) -> MethodSpec:
    """The registered method ``name``, or a ``RomaError`` listing the known ones."""
    if name not in METHODS:
        raise RomaError(f"unknown method kind {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]
