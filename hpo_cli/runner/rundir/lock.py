"""One writer per run directory: an exclusive ``flock`` on ``<run dir>/run.lock``.

The operating system releases the lock when its holder exits in any way, ``kill -9`` included,
so a stale lock file needs no clean-up: only a lock held by a live process refuses a second
writer. The holder's process id is written into the file, for the refusal to name it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.rundir.names import LOCK


class RunLocked(ConfigError):
    """Another live process holds the run directory; the message names it."""


def _holder(handle: int) -> str:
    os.lseek(handle, 0, os.SEEK_SET)
    pid = os.read(handle, 32).decode(errors="replace").strip()
    return f"process {pid}" if pid else "another process"


def _nothing() -> None:
    pass


@contextmanager
def run_lock(run_dir: Path, check: Callable[[], None] = _nothing) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the duration of the block. ``check`` runs once the lock is
    held and before the holder's id is written: what it raises leaves the lock file as it was.

    Raises:
        RunLocked: another process holds it.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(handle, run_dir)
        check()
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(handle)  # releases the lock


def _acquire(handle: int, run_dir: Path) -> None:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunLocked(
            f"{run_dir} is in use by {_holder(handle)} (an hpo-run writing there); wait for "
            "it to finish or stop it first"
        ) from None


def check_unlocked(run_dir: Path) -> None:
    """Raise :class:`RunLocked` if a live process holds ``run_dir``'s lock (a check made before
    anything is written, which writes nothing either; the writer itself holds
    :func:`run_lock`)."""
    if not (run_dir / LOCK).exists():
        return
    handle = os.open(run_dir / LOCK, os.O_RDONLY)
    try:
        _acquire(handle, run_dir)
    finally:
        os.close(handle)
