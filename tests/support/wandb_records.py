"""Read a W&B run file (``run-<id>.wandb``) back from disk, through the runner's own reader
(:mod:`hpo_cli.runner.tracking.wandb_files`, which holds the format)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hpo_cli.runner.tracking.wandb_files import records


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
