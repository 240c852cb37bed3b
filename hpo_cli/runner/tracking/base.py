"""What every experiment tracker implements (:class:`Tracker`), the settings they share
(:class:`TrackingSettings`, the ``tracking`` config block) and what a run tells them
(:class:`RunInfo`)."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

Scalar = int | float | str | bool


class TrackerUnavailable(RuntimeError):
    """A tracker cannot be used (its package is missing, its server unreachable); one line."""


@dataclass
class TrackingSettings:
    """The ``tracking`` block: which trackers record the run and where they write.

    Attributes:
        trackers: ``tensorboard``, ``mlflow``, ``wandb``: a list, or one name; empty: none
            (metrics.csv, summary.json and the plots are always written).
        experiment: the MLflow experiment and the W&B project of a single run; a sweep's jobs go
            to ``<experiment>/<sweep id>`` (MLflow) or the W&B group ``<sweep id>``.
        mlflow_uri: ``None``: an SQLite store ``outputs/mlflow/mlflow.db`` with artifacts in
            ``outputs/mlflow/artifacts`` (relative to the working directory); or any MLflow
            tracking URI, e.g. ``http://127.0.0.1:5000`` for ``mlflow server``.
        wandb_mode: ``offline`` (files only, no network; ``wandb sync`` uploads them later) or
            ``online`` (needs ``wandb login``).
    """

    trackers: list[str] | str = field(default_factory=list)
    experiment: str = "hpo-cli"
    mlflow_uri: str | None = None
    wandb_mode: str = "offline"


@dataclass
class RunInfo:
    """What a tracker is told about the run it records.

    Attributes:
        run_dir: the run directory (TensorBoard's events and W&B's offline files go there).
        name: the run's display name (``<date>/<time>`` of the run directory; ``job N`` in a
            sweep).
        group: the sweep id of a sweep's job (``<date>/<time>`` of the sweep directory), else
            ``None``.
        params: the flattened configuration, ``{"solver.terms": 3, ...}``.
        tags: ``hpo_cli_version``, ``device``, ``status`` (``running`` until the end), the
            command-line ``overrides``, and a sweep job's ``sweep`` and ``job``.
        settings: the ``tracking`` block.
    """

    run_dir: Path
    name: str
    group: str | None
    params: dict[str, Scalar]
    tags: dict[str, str]
    settings: TrackingSettings = field(default_factory=TrackingSettings)

    @property
    def experiment(self) -> str:
        """The MLflow experiment: the sweep's own one for a sweep job."""
        base = self.settings.experiment
        return base if self.group is None else f"{base}/{self.group}"


class Tracker(ABC):
    """One experiment tracker for one run.

    The runner calls :meth:`check` before training (a missing package or an unreachable server
    is a one-line error there), then :meth:`start` with the state that a previous session of
    the same run left (``None`` for a new run), :meth:`log_row` for every ``metrics.csv`` row
    not logged yet, and :meth:`finish` once with the final files. Any exception after
    :meth:`check` switches the tracker off for the rest of the run; metrics.csv and the
    checkpoints never depend on it.
    """

    name: ClassVar[str]
    package: ClassVar[str]  # the import name whose absence makes the tracker unavailable
    durable: ClassVar[bool] = True
    """Whether a row is in the tracker's store once :meth:`log_row` returns (a ``kill -9``
    right after cannot lose it); W&B, which writes through its own process, is not."""
    stored_in_run_dir: ClassVar[bool] = False
    """Whether the tracker's run is files inside the run directory and nothing else
    (TensorBoard): a copied run directory holds a copy of them and continues it; the others'
    runs (an MLflow store, a W&B run id) belong to the directory that started them."""

    @classmethod
    def check(cls, settings: TrackingSettings) -> None:
        """Raise :class:`TrackerUnavailable` when the tracker cannot be used."""
        if importlib.util.find_spec(cls.package) is None:
            raise TrackerUnavailable(
                f"tracking.trackers={cls.name} needs the {cls.package} package: "
                'pip install -e ".[tracking]" (or make install-tracking)'
            )

    @abstractmethod
    def start(self, info: RunInfo, state: dict[str, Any] | None) -> dict[str, Any]:
        """Open (``state is None``) or continue the tracker's run; return the state to store in
        ``tracking.json`` for a later resume (a run id, a store, a folder), and, when continuing,
        ``logged_until``: the last outer step the tracker's store holds (without it,
        ``state["logged_until"]`` stands); the rows after it are sent again."""

    @abstractmethod
    def log_row(self, values: dict[str, float], step: int) -> None:
        """Log one metrics row's numeric values at outer step ``step``: durably, for a
        :attr:`durable` tracker; else as a complete row that the tracker will write."""

    @abstractmethod
    def finish(self, status: str, artifacts: list[Path], tags: dict[str, str]) -> None:
        """Attach the run's files, set the final tags (``status`` among them) and close."""

    @abstractmethod
    def location(self) -> str:
        """One line telling the user where to look (a command or a URL)."""

    @classmethod
    def log_sweep(
        cls,
        sweep_dir: Path,
        job_states: list[dict[str, Any]],
        files: list[Path],
        tags: dict,
        values: dict[str, float],
    ) -> dict[str, Any] | None:
        """Log a sweep's summary files, ``tags`` and ``values`` (the best setting's numbers)
        beside its jobs' runs (``job_states``: what :meth:`start` returned for each job); return
        the summary run's state. Default: nothing
        (TensorBoard shows a sweep as the runs under its directory)."""
        return None
