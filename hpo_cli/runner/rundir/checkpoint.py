"""Checkpoints: everything a run needs to continue exactly where it stopped.

Written so that neither a kill nor a machine crash loses the run: the new checkpoint goes to a
temporary file that is flushed and fsynced, the current one is kept as ``checkpoint.previous.pt``
(a hard link), the temporary file replaces ``checkpoint.pt`` with ``os.replace`` and the
directory is fsynced. A checkpoint that cannot be read falls back to the previous one, saying so.

Checkpoints hold only tensors and plain values (numbers, strings, lists, dicts, ``None``) and
are loaded with ``torch.load(..., weights_only=True)``: one from someone else's run directory
cannot run code. A file that needs more is refused.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.rundir.names import CHECKPOINT, PREVIOUS_CHECKPOINT
from hpo_cli.runner.rundir.writes import replacing

log = logging.getLogger(__name__)


class CheckpointError(ConfigError):
    """A checkpoint cannot be used (damaged, not a checkpoint, or unsafe): bad input, exit 2."""


class Checkpoint(dict):
    """A checkpoint's content, a plain ``dict``, that knows the file it was read from
    (``path``), so that whoever uses it can name that file in a one-line error."""

    def __init__(self, content: dict[str, Any], path: Path) -> None:
        super().__init__(content)
        self.path = path


def require_keys(state: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Refuse a checkpoint that lacks one of ``keys``.

    Raises:
        CheckpointError: naming the file (:class:`Checkpoint`) and the missing keys.
    """
    missing = [key for key in keys if key not in state]
    if missing:
        raise CheckpointError(
            f"{source(state)} is not an hpo-run checkpoint (it lacks {', '.join(missing)})"
        )


def source(state: dict[str, Any]) -> str:
    """The file a checkpoint was read from, or ``the checkpoint`` for a dict built here."""
    return str(state.path) if isinstance(state, Checkpoint) else "the checkpoint"


def check_module(state: dict[str, Any], what: str, module: torch.nn.Module, saved: Any) -> None:
    """Refuse ``saved``, a state dict of ``state`` (a checkpoint), whose names or shapes are not
    ``module``'s: another architecture's weights.

    Raises:
        CheckpointError: naming the file and the first mismatch.
    """
    own = module.state_dict()
    if not isinstance(saved, dict):
        mismatch = f"it holds a {type(saved).__name__}, not a state dict"
    else:
        missing = [key for key in own if key not in saved]
        unexpected = [key for key in saved if key not in own]
        shapes = [
            f"{key}: {tuple(saved[key].shape)} in the checkpoint, {tuple(value.shape)} here"
            for key, value in own.items()
            if isinstance(saved.get(key), torch.Tensor) and saved[key].shape != value.shape
        ]
        mismatch = (
            f"missing {', '.join(missing)}"
            if missing
            else f"unexpected {', '.join(unexpected)}"
            if unexpected
            else f"size mismatch for {shapes[0]}"
            if shapes
            else ""
        )
    if mismatch:
        raise CheckpointError(
            f"{source(state)} does not fit this run's {what} ({mismatch}): it holds another "
            "architecture's state"
        )


def load_into(target: Any, state_dict: Any, state: dict[str, Any], what: str) -> None:
    """``target.load_state_dict(state_dict)`` (a model, λ, an optimiser), refusing in one line a
    state of another architecture (size mismatch, missing or unexpected keys).

    Raises:
        CheckpointError: naming the file and the first mismatch.
    """
    if isinstance(target, torch.nn.Module):
        check_module(state, what, target, state_dict)
    try:
        target.load_state_dict(state_dict)
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(error).__name__)
        raise CheckpointError(
            f"{source(state)} does not fit this run's {what} ({detail.rstrip('.')}): it holds "
            "another architecture's state"
        ) from error


def fsync_directory(directory: Path) -> None:
    """Force a directory's entries (a rename, a new file) to disk."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def save_checkpoint(run_dir: Path, state: dict[str, Any], name: str = CHECKPOINT) -> None:
    """Save ``state`` (tensors, state dicts, RNG states, plain values) to ``run_dir/name``,
    keeping the checkpoint it replaces as :data:`PREVIOUS_CHECKPOINT` (the main checkpoint only).

    Raises:
        RunFileNotWritten: the disk refused it (full, a file-size limit); no partial file is
            left, and the checkpoints before stay as they were.
    """
    path = run_dir / name
    with replacing(path) as partial:
        with partial.open("wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        if name == CHECKPOINT and path.exists():
            previous = run_dir / PREVIOUS_CHECKPOINT
            previous.unlink(missing_ok=True)
            os.link(path, previous)
    fsync_directory(run_dir)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """One checkpoint file, loaded with ``weights_only=True`` onto the CPU.

    Raises:
        CheckpointError: the file is damaged, is not a checkpoint, or holds objects other than
            tensors and plain values.
    """
    if not path.exists():
        raise CheckpointError(f"{path} is missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):
            raise CheckpointError(
                f"{path} holds objects other than tensors and plain values; refused, since "
                "loading it could run arbitrary code"
            ) from error
        raise CheckpointError(f"{path} is damaged (not a readable checkpoint)") from error
    except Exception as error:  # random bytes fail wherever the unpickler trips (IndexError, ...)
        reason = str(error).split(".")[0] or type(error).__name__
        raise CheckpointError(f"{path} is damaged or truncated ({reason})") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not an hpo-run checkpoint (it holds a {type(state)})")
    return Checkpoint(state, path)


def load_checkpoint(run_dir: Path, *, warn: bool = True) -> dict[str, Any] | None:
    """The last readable checkpoint of a run directory, or ``None`` when it has none yet.

    When ``checkpoint.pt`` cannot be read but the previous checkpoint can, a warning says so
    (unless not ``warn``: a check before the load that runs the run, which says it) and the
    previous one is returned (the run then repeats the steps in between).

    Raises:
        CheckpointError: no checkpoint of the directory can be read.
    """
    path, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS_CHECKPOINT
    if not path.exists() and not previous.exists():
        return None
    try:
        return read_checkpoint(path)
    except CheckpointError as error:
        if not previous.exists():
            raise
        state = read_checkpoint(previous)
        if warn:
            log.warning("%s; falling back to the previous checkpoint, %s", error, previous)
        return state
