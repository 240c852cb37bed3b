"""Where a run stands (:class:`Progress`, saved in every checkpoint), per-phase wall time, and
:class:`RunFailed`, the error that stops a run while keeping its files, and
:class:`RunInterrupted`, a run stopped on request (SIGTERM)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from hpo_cli.runner.loop import solver_health
from hpo_cli.runner.loop.early_stopping import initial_state


@dataclass
class Progress:
    """What a checkpoint must carry besides the state dicts."""

    device: str = "cpu"
    outer_step: int = 0
    total_inner_steps: int = 0  # inner steps since the run began (inner_steps per outer step)
    skipped_hyper_steps: int = 0  # mirrors JointOptimizer.skipped_hyper_steps; saved here
    elapsed_s: float = 0.0
    phase_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    last_hyper: dict[str, Any] = field(default_factory=dict)
    early_stopping: dict[str, Any] = field(default_factory=initial_state)  # best, best_step, wait
    stop_reason: str | None = None  # "completed" or the early-stopping reason, once stopped
    metrics_rows: int | None = None  # rows in metrics.csv; None in checkpoints older than it
    # hyper-steps by solver status, the doubtful ones, the residuals, whether the run warned
    # (hpo_cli.runner.loop.solver_health); from the resume on in checkpoints older than it
    solves: dict[str, Any] = field(default_factory=solver_health.initial_counts)
    # [outer step, cosine] of every quality probe (quality_every); from the resume on in
    # checkpoints older than it
    quality: list[list[float]] = field(default_factory=list)


class RunFailed(RuntimeError):
    """The run cannot go on (non-finite loss, diverged solver); files written so far are kept.

    Attributes:
        progress: where the run stopped.
    """

    def __init__(self, message: str, progress: Progress) -> None:
        super().__init__(message)
        self.progress = progress


class RunInterrupted(KeyboardInterrupt):
    """The run was asked to stop (SIGTERM) and stopped cleanly between outer steps, its last
    completed step checkpointed; handled as Ctrl-C is (status ``interrupted``).

    Attributes:
        progress: where the run stopped (``None`` when a step was abandoned).
    """

    def __init__(self, message: str, progress: Progress | None) -> None:
        super().__init__(message)
        self.progress = progress


@contextmanager
def phase(progress: Progress, name: str, device: torch.device) -> Iterator[None]:
    """Add the wall time of the block to ``progress.phase_s[name]``."""
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    progress.phase_s[name] += time.perf_counter() - start
