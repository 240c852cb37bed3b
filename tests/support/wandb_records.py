"""Read a W&B offline run file (``run-<id>.wandb``) back from disk.

The file is a LevelDB-style log (the format W&B's own ``wandb sync`` reads): a 7-byte header
(``:W&B``, magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each with a 7-byte header
(CRC32-C, little-endian length, type: 1 full, 2 first, 3 middle, 4 last); a block's last
< 7 bytes are padding. Each whole record is a ``wandb.proto.wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7


def records(path: Path) -> list[Any]:
    """Every record of the file, parsed."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<H", data[4:6])[0] == 0xBEE1, path
    found, pending, offset = [], b"", HEADER
    while offset + HEADER <= len(data):
        if BLOCK - offset % BLOCK < HEADER:  # padding at the end of a block
            offset += BLOCK - offset % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + HEADER])
        chunk = data[offset + HEADER : offset + HEADER + length]
        offset += HEADER + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            found.append(record)
    return found


def history(path: Path) -> list[dict[str, Any]]:
    """The logged rows, ``{"_step": ..., key: value}``, in order."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            row = {
                item.key or "/".join(item.nested_key): item.value_json
                for item in record.history.item
            }
            rows.append({key: json.loads(value) for key, value in row.items()})
    return rows


def run_record(path: Path) -> Any:
    """The run record (id, project, group, tags, config)."""
    return next(r.run for r in records(path) if r.WhichOneof("record_type") == "run")


def wait_for_exit(path: Path, timeout_s: float = 30.0) -> None:
    """Wait until W&B's service process (which writes the file after ``run.finish()`` returns)
    has written the run's exit record."""
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and any(r.WhichOneof("record_type") == "exit" for r in records(path))):
        assert time.monotonic() < deadline, f"{path} has no exit record after {timeout_s} s"
        time.sleep(0.2)
