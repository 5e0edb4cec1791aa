"""Append-only JSON-lines logs (``outcomes.jsonl``): read back what an interrupted writer left."""

from __future__ import annotations

import json
from pathlib import Path


def read_records(path: str | Path) -> list[dict]:
    """The JSON objects of ``path``, one per line, in order; a line torn by an interruption (or any
    line that is not an object) is skipped, since its run is done again. No file: no records."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out
