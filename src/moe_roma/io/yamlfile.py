"""Read a YAML configuration file into a mapping, or say in one sentence why not."""

from __future__ import annotations

from pathlib import Path

import yaml

from moe_roma.io.errors import RomaError
from moe_roma.io.paths import check_regular_file


def load_yaml_mapping(path: str | Path, what: str, expected: str) -> dict:
    """The mapping in ``path``; ``what`` names the file's role, ``expected`` its content, for errors.

    An empty file reads as an empty mapping.
    """
    p = check_regular_file(path, what)
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise RomaError(f"{p}: not a UTF-8 text file (is it a YAML file?)") from None
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
