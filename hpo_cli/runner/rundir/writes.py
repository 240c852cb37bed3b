"""How a run file is written, and what a write that fails becomes.

Every file is written whole or not at all: its new content goes to ``<name>.partial``, which
then replaces the file (:func:`replacing`). A write the disk refuses (full, a quota, a file-size
limit: ``ulimit -f`` makes it ``EFBIG``, as Python ignores ``SIGXFSZ``) removes the partial file
and raises :class:`RunFileNotWritten`, one line naming the file and the reason; the run then
fails (exit 1) with what it wrote before kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class RunFileNotWritten(RuntimeError):
    """A run file could not be written (the disk is full, a file-size limit...); the message
    names the file and the reason in one line. The file keeps its previous content.

    Attributes:
        path: the file.
        reason: the ``OSError`` of the write.
    """

    def __init__(self, path: Path, reason: OSError) -> None:
        super().__init__(f"{path} could not be written ({describe(reason)})")
        self.path, self.reason = path, reason


def describe(error: OSError) -> str:
    """``File too large``: the reason of an ``OSError``, without its file name."""
    return error.strerror or str(error) or type(error).__name__


def os_error(error: BaseException) -> OSError | None:
    """The ``OSError`` behind ``error``: itself, or the one it was raised from or during
    (``torch.save`` reports a failed write as a ``RuntimeError`` raised while handling it)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def not_written(path: Path, error: BaseException) -> BaseException:
    """:class:`RunFileNotWritten` for ``path`` when an ``OSError`` is behind ``error``,
    ``error`` itself otherwise (a bug is not a full disk)."""
    cause = os_error(error)
    if cause is None or isinstance(error, RunFileNotWritten):
        return error
    return RunFileNotWritten(path, cause)


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """The partial file to write ``path``'s new content to: when the block ends without an
    error, it replaces ``path`` (``os.replace``, atomic); when the block fails, it is removed.

    Raises:
        RunFileNotWritten: the write failed with an ``OSError`` (a full disk, ``EFBIG``...).
    """
    partial = path.with_name(f"{path.name}.partial")
    try:
        yield partial
        os.replace(partial, path)
    except BaseException as error:
        partial.unlink(missing_ok=True)
        raised = not_written(path, error)
        if raised is error:
            raise
        raise raised from error
