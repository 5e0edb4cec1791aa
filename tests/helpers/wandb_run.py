"""Read a W&B offline run file (``run-<id>.wandb``) with W&B's own protobuf definitions.

Since wandb moved its record store into its Go core, the Python package has no reader; the file is a
7-byte header (``:W&B``, a 2-byte magic, a version byte) followed by records in the LevelDB log
format (32 KiB blocks; each chunk: CRC-32C (4), length (2, little-endian), type (1: full,
2: first, 3: middle, 4: last)), each record a ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7


def read_records(path: str | Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, chunks, records = HEADER, b"", []
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a chunk header is padding
            pos += BLOCK - pos % BLOCK
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            records.append(payload)
        elif kind == 2:
            chunks = payload
        elif kind == 3:
            chunks += payload
        elif kind == 4:
            records.append(chunks + payload)
    return [pb.Record.FromString(r) for r in records]


def run_contents(path: str | Path) -> dict:
    """{"config": {...}, "history": [{...}, ...], "summary": {...}} of an offline run file, JSON-decoded."""
    out: dict = {"config": {}, "history": [], "summary": {}}
    for r in read_records(path):
        kind = r.WhichOneof("record_type")
        if kind in ("run", "config"):  # the config given to wandb.init comes in the run record
            updates = r.run.config.update if kind == "run" else r.config.update
            out["config"].update({u.key: json.loads(u.value_json) for u in updates})
        elif kind == "history":
            out["history"].append(
                {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
            )
        elif kind == "summary":
            out["summary"].update(
                {(u.key or "/".join(u.nested_key)): json.loads(u.value_json) for u in r.summary.update}
            )
    return out
