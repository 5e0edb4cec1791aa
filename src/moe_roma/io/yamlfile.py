"""Read a YAML configuration file into a mapping, or say in one sentence why not.

The safe loader builds only plain values. A file whose anchors and aliases (``&a`` / ``*a``) expand
to more than ``MAX_NODES`` values (a "billion laughs" file of 1 KB) or refer to themselves is refused
before anything is built from it, and so is a file larger than ``MAX_BYTES``: a configuration is
small, and a value that expands beyond them would exhaust memory later, when it is copied or printed.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from moe_roma.io.errors import RomaError
from moe_roma.io.paths import check_regular_file

MAX_NODES = 100_000  # values of a configuration once its aliases are expanded
MAX_BYTES = 10_000_000


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values ``node`` stands for once its aliases are expanded (``MAX_NODES + 1``: too many)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = MAX_NODES + 1  # a node that contains itself is never finite
    size = 1
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    else:
        children = []
    for child in children:
        size += _expanded_size(child, memo)
        if size > MAX_NODES:
            break
    memo[key] = min(size, MAX_NODES + 1)
    return memo[key]


def load_yaml_mapping(path: str | Path, what: str, expected: str) -> dict:
    """The mapping in ``path``; ``what`` names the file's role, ``expected`` its content, for errors.

    An empty file reads as an empty mapping.
    """
    p = check_regular_file(path, what)
    if p.stat().st_size > MAX_BYTES:
        raise RomaError(f"{p}: {p.stat().st_size} bytes; a {what} is refused above {MAX_BYTES} bytes")
    try:
        loader = yaml.SafeLoader(p.read_text(encoding="utf-8"))
        try:
            node = loader.get_single_node()
            if node is not None and _expanded_size(node, {}) > MAX_NODES:
                raise RomaError(
                    f"{p}: its aliases (&anchor / *alias) expand to more than {MAX_NODES} values or refer "
                    f"to themselves; a {what} is refused above that"
                )
            loaded = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except UnicodeDecodeError:
        raise RomaError(f"{p}: not a UTF-8 text file (is it a YAML file?)") from None
    except RecursionError:
        raise RomaError(f"{p}: nested too deeply to be a {what}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RomaError(f"{p}{where}: malformed YAML ({problem})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise RomaError(f"{p}: expected {expected}")
    return loaded
