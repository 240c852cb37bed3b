"""The run directory: the one place that knows the name of every file a run writes.

    <run dir>/
      metrics.csv              one row per evaluation          (:mod:`.metrics`)
      solver_comparison.csv    solver_comparison.every rows    (:mod:`.metrics`)
      summary.json             status, best and final rows     (:mod:`.summary`)
      checkpoint.pt            the last checkpoint             (:mod:`.checkpoint`)
      checkpoint.previous.pt   the one before, kept until the next is whole
      checkpoint_best.pt       the best weights (early stopping)
      hyperparameters.pt       λ in full at the end, {name: tensor} (:mod:`.hyperparameters`)
      hyperparameters_best.pt  λ of checkpoint_best.pt (early stopping)
      hyperparameters.json     their shapes, quantiles and small tensors' values
      run.lock                 held by the process writing the run (:mod:`.lock`)
      hpo-run.log              the run's log, opened once the directory is claimed (:mod:`.claim`)
      tracking.json            where each tracker logs the run, and for which directory
                               (:mod:`hpo_cli.runner.tracking`)
      .hydra/                  config.yaml, overrides.yaml, hydra.yaml: the run's records,
                               written by the claim (a resume's replace the first two)
      *.png                    plots drawn from the files above

:class:`RunDirectory` is the one owner of these files: every other module reads and writes them
through it (``tests/test_layers.py`` checks that no module outside this package spells their
names). Formats and atomic writes live beside it: :mod:`.metrics`, :mod:`.checkpoint`,
:mod:`.summary`, :mod:`.lock`; a damaged file is one :class:`hpo_cli.runner.errors.ConfigError`
line (``MetricsDamaged``, ``CheckpointError``, :class:`RunDirectoryDamaged` for the others).
The modules that need torch or pandas (:mod:`.checkpoint`, :mod:`.hyperparameters`,
:mod:`.summary`) are imported by the methods that use them, so that ``hpo-run``'s checks
before a run (a fresh directory, a lock) start without either.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.rundir import lock
from hpo_cli.runner.rundir.claim import Claim, check_creatable, entries, run_log
from hpo_cli.runner.rundir.metrics import SOLVER_COMPARISON_COLUMNS, MetricsLog
from hpo_cli.runner.rundir.names import (
    BEST_CHECKPOINT,
    BEST_HYPERPARAMETERS,
    CHECKPOINT,
    HYDRA,
    HYPERPARAMETERS,
    HYPERPARAMETERS_SUMMARY,
    LOCK,
    LOG,
    METRICS,
    PREVIOUS_CHECKPOINT,
    SOLVER_COMPARISON,
    SUMMARY,
    TRACKING,
)
from hpo_cli.runner.rundir.reading import RunDirectoryDamaged, one_line, read_json, read_yaml
from hpo_cli.runner.rundir.writes import RunFileNotWritten, replacing

if TYPE_CHECKING:
    import pandas as pd


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
    def hyperparameters(self) -> Path:
        """λ in full at the end of the run, ``{name: tensor}`` (:mod:`.hyperparameters`)."""
        return self.path / HYPERPARAMETERS

    @property
    def best_hyperparameters(self) -> Path:
        """λ of ``checkpoint_best.pt``, ``{name: tensor}`` (early stopping only)."""
        return self.path / BEST_HYPERPARAMETERS

    @property
    def hyperparameters_summary(self) -> Path:
        """Shapes, quantiles and small tensors' values of the two files above."""
        return self.path / HYPERPARAMETERS_SUMMARY

    def hyperparameter_files(self) -> list[Path]:
        """Those of the three files that exist: the summary, the last values, the best."""
        files = [self.hyperparameters_summary, self.hyperparameters, self.best_hyperparameters]
        return [path for path in files if path.exists()]

    @property
    def lock(self) -> Path:
        return self.path / LOCK

    @property
    def log_file(self) -> Path:
        return self.path / LOG

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

    def artifacts(self) -> list[Path]:
        """The files a tracker attaches at the end: summary.json, the CSVs, hyperparameters.json
        and the PNG plots."""
        files = [self.summary, self.metrics, self.solver_comparison, self.hyperparameters_summary]
        return [path for path in files if path.exists()] + sorted(self.path.glob("*.png"))

    def has_metrics(self) -> bool:
        """Whether ``metrics.csv`` exists and is not empty."""
        return self.metrics.exists() and self.metrics.stat().st_size > 0

    def holds_run(self) -> bool:
        """Whether the directory already holds a run's metrics or checkpoint."""
        return self.has_metrics() or self.checkpoint.exists()

    def check_creatable(self) -> None:
        """Refuse a path that cannot become a run directory (:func:`.claim.check_creatable`).

        Raises:
            ConfigError: naming the path and what stands in the way.
        """
        check_creatable(self.path)

    def refuse_existing_run(self, *, claimed: bool = False) -> None:
        """Refuse a new run into a directory that holds a run (:meth:`holds_run`) or, with
        ``claimed``, one that a run has claimed (its saved configuration, even before its first
        metrics row).

        Raises:
            ConfigError: naming the directory and the resume that would continue it.
        """
        if self.holds_run() or (claimed and self.saved_config.exists()):
            raise ConfigError(f"{self.path} already holds a run; pass resume={self.path}")

    def interrupted_with(self, overrides: list[str]) -> bool:
        """Whether the directory holds an unfinished run with a checkpoint (summary.json says
        it was interrupted, or there is none: the process was killed) that was started with
        ``overrides``: a requeued job of a multirun finding its own run. A damaged record is
        no such run."""
        if not (self.checkpoint.exists() and self.saved_overrides.exists()):
            return False
        try:
            summary = self.read_summary()
            started_with = self.overrides()
        except ConfigError:
            return False
        status = None if summary is None else summary.get("status")
        return status in (None, "interrupted") and started_with == list(overrides)

    def read_saved_config(self) -> DictConfig:
        """``.hydra/config.yaml``: the run's configuration as composed.

        Raises:
            RunDirectoryDamaged: missing, not valid YAML, or not a mapping.
        """
        cfg = read_yaml(self.saved_config)
        if not isinstance(cfg, DictConfig) or not cfg:
            raise RunDirectoryDamaged(
                self.saved_config, "is damaged (it does not hold a run's configuration)"
            )
        return cfg

    def read_hydra_config(self, node: str = "hydra") -> Any:
        """``node`` of ``.hydra/hydra.yaml``, Hydra's record of the run (``hydra.runtime.choices``:
        its choices; ``hydra.overrides.hydra``: the overrides of Hydra's own keys).

        Raises:
            RunDirectoryDamaged: missing, not valid YAML, or without ``node``.
        """
        record = read_yaml(self.hydra_config)
        try:
            found = OmegaConf.select(record, node, throw_on_missing=True)
        except OmegaConfBaseException:
            found = None
        if not isinstance(found, DictConfig | ListConfig):
            raise RunDirectoryDamaged(
                self.hydra_config, f"is damaged (it lacks Hydra's record of the run: {node})"
            )
        return found

    def choices(self) -> dict[str, str | None]:
        """Group → option the run was composed with (Hydra's record); ``{}`` without one.

        Raises:
            RunDirectoryDamaged: ``.hydra/hydra.yaml`` is there but damaged.
        """
        if not self.hydra_config.exists():
            return {}
        choices = self.read_hydra_config("hydra.runtime.choices")
        if not isinstance(choices, DictConfig):
            raise RunDirectoryDamaged(self.hydra_config, "is damaged (hydra.runtime.choices)")
        return {
            str(group): None if option is None else str(option) for group, option in choices.items()
        }

    def hydra_overrides(self) -> list[str]:
        """The overrides of Hydra's own keys the run was started with (``hydra.searchpath``...),
        as written (``hydra.run.dir=out/${seed}`` stays unresolved).

        Raises:
            RunDirectoryDamaged: ``.hydra/hydra.yaml`` is missing or damaged.
        """
        overrides = OmegaConf.to_container(
            self.read_hydra_config("hydra.overrides.hydra"), resolve=False
        )
        if not isinstance(overrides, list):
            raise RunDirectoryDamaged(self.hydra_config, "is damaged (hydra.overrides.hydra)")
        return [str(o) for o in overrides]

    def overrides(self) -> list[str]:
        """The run's command-line overrides, as saved in ``.hydra/overrides.yaml``.

        Raises:
            RunDirectoryDamaged: missing, not valid YAML, or not a list of ``key=value``.
        """
        saved = read_yaml(self.saved_overrides)
        overrides = OmegaConf.to_container(saved, resolve=False)
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise RunDirectoryDamaged(
                self.saved_overrides, "is damaged (it does not hold a list of overrides)"
            )
        return overrides

    def read_summary(self) -> dict[str, Any] | None:
        """``summary.json``'s content, or ``None`` before the run has written one.

        Raises:
            RunDirectoryDamaged: not valid JSON, or not an object.
        """
        if not self.summary.exists():
            return None
        content = read_json(self.summary)
        if not isinstance(content, dict):
            raise RunDirectoryDamaged(self.summary, "is damaged (not a JSON object)")
        return content

    def read_tracking(self) -> dict[str, dict[str, Any]]:
        """``tracking.json``: each tracker's run, its run directory and last step; ``{}``: none.

        Raises:
            RunDirectoryDamaged: not valid JSON, or not an object of one object per tracker.
        """
        if not self.tracking.exists():
            return {}
        content = read_json(self.tracking)
        if not isinstance(content, dict) or not all(isinstance(v, dict) for v in content.values()):
            raise RunDirectoryDamaged(
                self.tracking, "is damaged (not a JSON object of one object per tracker)"
            )
        return content

    def write_tracking(self, states: dict[str, dict[str, Any]]) -> None:
        """Replace ``tracking.json`` with ``states`` atomically (a whole file, or the old one)."""
        partial = self.tracking.with_suffix(".json.partial")
        with partial.open("w") as handle:
            handle.write(json.dumps(states, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(self.tracking)

    def identity(self) -> dict[str, str]:
        """Which directory this is, for files that must not follow a copy (``tracking.json``):
        its absolute path, and its ``device:inode``, which ``mv`` within a file system keeps and
        ``cp -a`` does not."""
        found = self.path.resolve()
        stat = found.stat()
        return {"run_dir": str(found), "run_dir_inode": f"{stat.st_dev}:{stat.st_ino}"}

    def copied_from(self, recorded: dict[str, Any]) -> Path | None:
        """The run directory whose :meth:`identity` is ``recorded``, when this directory is a copy
        of it: another path and another inode, and that directory still exists. ``None`` for
        this directory itself, for one moved here (same inode; or, moved across file systems,
        its old path gone), and for ``recorded`` without an identity (written before
        identities were recorded: taken as this directory's own)."""
        if "run_dir" not in recorded:
            return None
        here = self.identity()
        if recorded["run_dir"] == here["run_dir"]:
            return None
        if recorded.get("run_dir_inode") == here["run_dir_inode"]:
            return None
        original = Path(recorded["run_dir"])
        return original if original.is_dir() else None

    # ------------------------------------------------------------ formats, through their modules
    def metrics_log(self) -> MetricsLog:
        """``metrics.csv``, one row per evaluation (:class:`.metrics.MetricsLog`)."""
        return MetricsLog(self.metrics)

    def comparison_log(self) -> MetricsLog:
        """``solver_comparison.csv``, several rows per outer step."""
        return MetricsLog(self.solver_comparison, SOLVER_COMPARISON_COLUMNS, one_row_per_step=False)

    def read_metrics_frame(self, *, rows: bool = True) -> pd.DataFrame:
        """``metrics.csv`` as a table, for a figure or a sweep's table; with ``rows``, at least
        one row of it (a run that failed before its first evaluation has only the header).

        Raises:
            RunDirectoryDamaged: the folder or the file is missing, or the file is empty, is not
                CSV, has no ``outer_step`` column or (with ``rows``) holds only its header.
        """
        import pandas as pd

        if not self.path.is_dir():
            raise RunDirectoryDamaged(self.path, "is not a run directory (no such folder)")
        if not self.metrics.is_file():
            raise RunDirectoryDamaged(self.metrics, "is missing: the run has written no metrics")
        try:
            frame = pd.read_csv(self.metrics)
        except pd.errors.EmptyDataError as error:
            raise RunDirectoryDamaged(self.metrics, "is empty") from error
        except (OSError, UnicodeDecodeError, pd.errors.ParserError) as error:
            what = f"is damaged (not readable CSV: {one_line(error)})"
            raise RunDirectoryDamaged(self.metrics, what) from error
        if "outer_step" not in frame.columns:
            raise RunDirectoryDamaged(self.metrics, "is damaged (its header has no outer_step)")
        if rows and frame.empty:
            raise RunDirectoryDamaged(self.metrics, "holds no rows (only its header)")
        return frame

    def read_metrics(self) -> list[dict[str, Any]]:
        """The rows of ``metrics.csv`` with their types (missing values as ``None``)."""
        from hpo_cli.runner.rundir import summary

        return summary.read_metrics(self.path)

    def load_checkpoint(self, *, warn: bool = True) -> dict[str, Any] | None:
        """The last checkpoint (or the previous one when it is damaged, saying so unless not
        ``warn``: :func:`.checkpoint.load_checkpoint`); ``None`` without one.

        Raises:
            CheckpointError: no readable checkpoint, or an unsafe one.
        """
        from hpo_cli.runner.rundir import checkpoint

        return checkpoint.load_checkpoint(self.path, warn=warn)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Write ``checkpoint.pt`` atomically, keeping the one it replaces as the previous."""
        from hpo_cli.runner.rundir import checkpoint

        checkpoint.save_checkpoint(self.path, state)

    def load_best_checkpoint(self) -> dict[str, Any] | None:
        """``checkpoint_best.pt`` (early stopping's best weights); ``None`` without one.

        Raises:
            CheckpointError: the file is damaged or unsafe.
        """
        from hpo_cli.runner.rundir import checkpoint

        if not self.best_checkpoint.exists():
            return None
        return checkpoint.read_checkpoint(self.best_checkpoint)

    def write_hyperparameters(
        self,
        last: dict[str, Any],
        best: dict[str, Any] | None,
        about: dict[str, Any],
    ) -> None:
        """Write λ in full (:func:`.hyperparameters.write_hyperparameters`)."""
        from hpo_cli.runner.rundir import hyperparameters

        hyperparameters.write_hyperparameters(self.path, last, best, about)

    def save_best_checkpoint(self, state: dict[str, Any]) -> None:
        """Write ``checkpoint_best.pt`` atomically (early stopping's best weights)."""
        from hpo_cli.runner.rundir import checkpoint

        checkpoint.save_checkpoint(self.path, state, BEST_CHECKPOINT)

    def write_summary(
        self, *, status: str, progress: Any, overrides: list[str], error: str | None = None
    ) -> dict[str, Any]:
        """Write ``summary.json`` (:func:`.summary.write_summary`); return its content."""
        from hpo_cli.runner.rundir import summary

        return summary.write_summary(
            self.path, status=status, progress=progress, overrides=overrides, error=error
        )

    def save_config(
        self,
        cfg: DictConfig,
        overrides: list[str] | ListConfig,
        hydra_record: DictConfig | None = None,
    ) -> None:
        """Save the run's configuration (unresolved), its overrides and, for a new run, Hydra's
        record of it (the ``hydra`` node: choices, search path) in ``.hydra/``, each atomically."""
        records = [(self.saved_config, cfg), (self.saved_overrides, overrides)]
        if hydra_record is not None:
            records.append((self.hydra_config, hydra_record))
        self.saved_config.parent.mkdir(parents=True, exist_ok=True)
        for path, content in records:
            with replacing(path) as partial:
                OmegaConf.save(content, partial)

    @contextmanager
    def claimed(
        self,
        cfg: DictConfig,
        overrides: list[str],
        hydra_record: DictConfig | None = None,
        *,
        fresh: bool,
        log_name: str = LOG,
    ) -> Iterator[Claim]:
        """Make the directory this run's and hold it for the block: take its lock, refuse a
        fresh run where a run already is (:meth:`refuse_existing_run`, checked again once the
        lock is held, so that of two launches into one directory at the same moment one is
        refused), then write the run's records (:meth:`save_config`) and log into ``log_name``
        (``hpo-run.log``; hpo-hessian's own). A refused claim writes nothing: no command changes
        another run's directory, a sweep's job and a ``${seed}`` directory included.

        Yields:
            The :class:`.claim.Claim`, whose ``undo`` takes back what a fresh run wrote when it
            is refused before training.

        Raises:
            RunLocked: another live process holds the directory.
            ConfigError: ``fresh`` and the directory holds a run.
            RunFileNotWritten: the disk refused the records (a fresh run's claim is undone).
        """

        def check() -> None:
            if fresh:
                self.refuse_existing_run(claimed=True)

        check()  # before anything is created, the lock file included
        claim = Claim(self.path, self.path.is_dir(), entries(self.path))
        with lock.run_lock(self.path, check):
            try:
                self.save_config(cfg, overrides, hydra_record)
            except RunFileNotWritten:  # a full disk: a fresh run leaves nothing behind
                if fresh:
                    claim.undo()
                raise
            with run_log(self.path / log_name):
                yield claim

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run's lock (``run.lock``) for the block.

        Raises:
            RunLocked: another live process holds it.
        """
        with lock.run_lock(self.path):
            yield

    def check_unlocked(self) -> None:
        """Refuse a directory that another live process writes (:class:`.lock.RunLocked`)."""
        lock.check_unlocked(self.path)
