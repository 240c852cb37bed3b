"""Whether a path can become a run directory, what claiming it wrote (to take back when the run is
refused before it starts), and the run's log file (``hpo-run.log``), opened only once the
directory is the run's.

A fresh run claims its directory (:meth:`.directory.RunDirectory.claimed`) after everything that
can be checked without writing has passed; what is refused after that (an MLflow server that does
not answer) was still found before the run's first metrics row, so the claim is undone
(:meth:`Claim.undo`): the files it created go, and the directory too if the claim made it and it
is left empty. Nothing that was there before the claim is touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hpo_cli.runner.errors import ConfigError

FILE_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
"""The log file's line format, Hydra's default one."""


def check_creatable(path: Path) -> None:
    """Refuse a path that cannot become a run directory: a file where the folder or one of the
    folders above it should be, or a folder that cannot be created (``/proc/x``) or written.
    Nothing is left behind: the first missing folder is created and removed again.

    Raises:
        ConfigError: naming the path and what stands in the way.
    """
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "it" if existing == path else existing
        raise ConfigError(f"{path} cannot be a run directory: {where} is a file")
    if existing == path:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{path} cannot be a run directory: it is not writable")
        return
    first = existing / path.relative_to(existing).parts[0]
    try:
        first.mkdir()
    except FileExistsError:  # another process created it meanwhile
        return
    except OSError as error:
        raise ConfigError(
            f"{path} cannot be a run directory: {first} cannot be created "
            f"({error.strerror or error})"
        ) from error
    with contextlib.suppress(OSError):  # another run may have filled it meanwhile
        first.rmdir()


def entries(path: Path) -> set[Path]:
    """Every file and folder under ``path`` (none: an empty set)."""
    return set(path.rglob("*")) if path.is_dir() else set()


@dataclass
class Claim:
    """A directory claimed by one run: ``existed`` says whether it was there before the claim,
    ``before`` what it held then."""

    path: Path
    existed: bool
    before: set[Path] = field(default_factory=set)

    def undo(self) -> None:
        """Remove what appeared in the directory since the claim (deepest first), and the
        directory itself if the claim made it and nothing else is left in it."""
        created = sorted(entries(self.path) - self.before, key=lambda p: len(p.parts))
        for path in reversed(created):
            if path.is_dir() and not path.is_symlink():
                if not any(path.iterdir()):
                    path.rmdir()
            else:
                path.unlink(missing_ok=True)
        if not self.existed and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()


@contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Copy every log record of the process into ``path`` (appended to) for the block."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
