"""The run directory: the one place that knows the name of every file a run writes.

    <run dir>/
      metrics.csv              one row per evaluation          (:mod:`.metrics`)
      solver_comparison.csv    solver_comparison.every rows    (:mod:`.metrics`)
      summary.json             status, best and final rows     (:mod:`.summary`)
      checkpoint.pt            the last checkpoint             (:mod:`.checkpoint`)
      checkpoint.previous.pt   the one before, kept until the next is whole
      checkpoint_best.pt       the best weights (early stopping)
      run.lock                 held by the process writing the run (:mod:`.lock`)
      tracking.json            where each tracker logs the run (:mod:`hpo_cli.runner.tracking`)
      .hydra/                  config.yaml, overrides.yaml, hydra.yaml (Hydra's, or a resume's)
      *.png                    plots drawn from the files above

Every module that reads or writes one of these asks a :class:`RunDirectory` for its path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from hpo_cli.runner.errors import ConfigError

METRICS = "metrics.csv"
SOLVER_COMPARISON = "solver_comparison.csv"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.previous.pt"
BEST_CHECKPOINT = "checkpoint_best.pt"
LOCK = "run.lock"
TRACKING = "tracking.json"
HYDRA = ".hydra"


@dataclass(frozen=True)
class RunDirectory:
    """The files of one run, by role. ``path`` need not exist yet."""

    path: Path

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def solver_comparison(self) -> Path:
        return self.path / SOLVER_COMPARISON

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def previous_checkpoint(self) -> Path:
        return self.path / PREVIOUS_CHECKPOINT

    @property
    def best_checkpoint(self) -> Path:
        return self.path / BEST_CHECKPOINT

    @property
    def lock(self) -> Path:
        return self.path / LOCK

    @property
    def tracking(self) -> Path:
        return self.path / TRACKING

    @property
    def saved_config(self) -> Path:
        """The run's configuration as composed (``.hydra/config.yaml``)."""
        return self.path / HYDRA / "config.yaml"

    @property
    def saved_overrides(self) -> Path:
        """The run's command-line overrides (``.hydra/overrides.yaml``)."""
        return self.path / HYDRA / "overrides.yaml"

    @property
    def hydra_config(self) -> Path:
        """Hydra's own record of the run: choices, search path (``.hydra/hydra.yaml``)."""
        return self.path / HYDRA / "hydra.yaml"

    def has_metrics(self) -> bool:
        """Whether ``metrics.csv`` exists and is not empty."""
        return self.metrics.exists() and self.metrics.stat().st_size > 0

    def holds_run(self) -> bool:
        """Whether the directory already holds a run's metrics or checkpoint."""
        return self.has_metrics() or self.checkpoint.exists()

    def refuse_existing_run(self) -> None:
        """Refuse a new run into a directory that holds a run (:meth:`holds_run`).

        Raises:
            ConfigError: naming the directory and the resume that would continue it.
        """
        if self.holds_run():
            raise ConfigError(f"{self.path} already holds a run; pass resume={self.path}")

    def choices(self) -> dict[str, str | None]:
        """Group → option the run was composed with (Hydra's record); ``{}`` without one."""
        if not self.hydra_config.exists():
            return {}
        choices = OmegaConf.load(self.hydra_config).hydra.runtime.choices
        return {
            str(group): None if option is None else str(option) for group, option in choices.items()
        }

    def overrides(self) -> list[str]:
        """The run's command-line overrides, as saved in ``.hydra/overrides.yaml``."""
        return [str(override) for override in OmegaConf.load(self.saved_overrides)]

    def read_summary(self) -> dict[str, Any] | None:
        """``summary.json``'s content, or ``None`` before the run has written one."""
        return json.loads(self.summary.read_text()) if self.summary.exists() else None
