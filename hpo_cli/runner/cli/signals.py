"""SIGTERM as a request to stop between two outer steps (what SLURM, submitit and Kubernetes send
before a kill), and the reasons an interrupted run records."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from hpo_cli.runner.loop.progress import RunInterrupted

log = logging.getLogger("hpo_cli")

SIGTERM = "interrupted by SIGTERM"
SIGINT = "interrupted (SIGINT)"


class StopRequest:
    """SIGTERM (what SLURM, submitit and Kubernetes send before a kill) as a request: the loop
    asks it before every outer step (:func:`hpo_cli.runner.loop.train.run`) and stops there,
    the last completed step checkpointed; a second SIGTERM abandons the step under way."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.training = False

    def __call__(self) -> str | None:
        return self.reason

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.reason is not None and self.training:
            raise RunInterrupted(SIGTERM, None)
        if self.reason is None:
            log.warning("SIGTERM: stopping after the current outer step (again: at once)")
        self.reason = SIGTERM


@contextmanager
def stop_on_sigterm() -> Iterator[StopRequest]:
    """A :class:`StopRequest` handling SIGTERM for the block, in the main thread only (a
    handler cannot be installed elsewhere); the previous handler is put back afterwards."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, request.handle)
    try:
        yield request
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
