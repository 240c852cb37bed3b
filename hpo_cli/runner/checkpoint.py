"""Checkpoints: everything a run needs to continue exactly where it stopped.

Written atomically (a temporary file, then ``os.replace``) so a kill during the write leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors, state dicts, RNG states, plain numbers) to the run directory."""
    path = run_dir / CHECKPOINT_NAME
    partial = path.with_suffix(".pt.partial")
    torch.save(state, partial)
    os.replace(partial, path)


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The last checkpoint of a run directory, or ``None`` when it has none yet."""
    path = run_dir / CHECKPOINT_NAME
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)
