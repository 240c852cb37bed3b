"""W&B's run files read back: which outer steps a W&B run's ``run-<id>.wandb`` files hold.

W&B writes a run through its own service process, after ``run.log`` has returned, so a row
handed to W&B is not yet a row W&B has (a ``kill -9`` may lose it). The run's transaction log,
``<run dir>/wandb/<offline-run|run>-<time>-<id>/run-<id>.wandb`` (the file ``wandb sync``
uploads; an online run writes it too), is what W&B has durably received: a resume continues
the W&B run from the last step found there (:func:`last_step`).

The format is a LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then
32 KiB blocks of chunks, each with a 7-byte header (CRC-32 of the type byte and the data,
little-endian length, type: 1 full, 2 first, 3 middle, 4 last); a block's last < 7 bytes are
padding. Each whole record is a ``wandb.proto.wandb_internal_pb2.Record``. A chunk cut short or
whose checksum fails (a write the kill interrupted) ends the file.
"""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    """Every whole record of ``path``, parsed, up to the first damaged or unfinished chunk."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if data[:4] != b":W&B" or len(data) < HEADER or struct.unpack("<H", data[4:6])[0] != 0xBEE1:
        return []  # not written yet, or not a W&B run file
    found, pending, offset = [], b"", HEADER
    while offset + HEADER <= len(data):
        if BLOCK - offset % BLOCK < HEADER:  # padding at the end of a block
            offset += BLOCK - offset % BLOCK
            continue
        checksum, length, kind = struct.unpack("<IHB", data[offset : offset + HEADER])
        chunk = data[offset + HEADER : offset + HEADER + length]
        if len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != checksum:
            break
        offset += HEADER + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            found.append(record)
    return found


def run_files(wandb_dir: Path, run_id: str) -> list[Path]:
    """The transaction logs of W&B run ``run_id`` under ``wandb_dir``: one per session (a
    resumed run opens a folder of its own), oldest first (``latest-run`` is a link, skipped)."""
    return sorted(wandb_dir.glob(f"*-{run_id}/run-{run_id}.wandb"))


def history_steps(path: Path) -> list[int]:
    """The steps of the history rows ``path`` holds, in order."""
    return [
        record.history.step.num
        for record in records(path)
        if record.WhichOneof("record_type") == "history"
    ]


def settle(path: Path, quiet_s: float = 1.0, timeout_s: float = 30.0) -> None:
    """Wait until W&B's service process has done writing ``path`` (it may still be writing
    after ``run.finish()`` has returned, or after its run was killed): the file holds the run's
    exit record, or has not grown for ``quiet_s`` seconds; at most ``timeout_s``."""
    deadline, size, since = time.monotonic() + timeout_s, -1, time.monotonic()
    while time.monotonic() < deadline:
        if any(r.WhichOneof("record_type") == "exit" for r in records(path)):
            return
        now = path.stat().st_size
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.1)


def last_step(wandb_dir: Path, run_id: str) -> int:
    """The last step W&B run ``run_id`` holds in its files under ``wandb_dir`` (once the latest
    session's file has settled: :func:`settle`); -1: none."""
    files = run_files(wandb_dir, run_id)
    if files:
        settle(max(files, key=lambda path: path.stat().st_mtime))
    steps = [step for path in run_files(wandb_dir, run_id) for step in history_steps(path)]
    return max(steps, default=-1)
