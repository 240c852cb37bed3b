"""Experiment trackers beside ``metrics.csv``: ``tracking.trackers=[tensorboard,mlflow,wandb]``.

    hpo-run tracking.trackers=[tensorboard]     # event files in <run dir>/tensorboard
    hpo-run tracking.trackers=[mlflow]          # outputs/mlflow/mlflow.db (SQLite) + artifacts
    hpo-run tracking.trackers=[mlflow] tracking.mlflow_uri=http://127.0.0.1:5000  # a server
    hpo-run tracking.trackers=[tensorboard,mlflow,wandb]  # several; W&B offline by default

The run directory's own files (metrics.csv, summary.json, the plots) are always written. Each
tracker gets the flattened configuration as parameters, every metrics row at its outer step, the
plots, summary.json and the CSVs as artifacts, and the tags ``hpo_cli_version``, ``device`` and
``status``.

:class:`Trackers` is the runner's one handle on them all. It records each tracker's run (its id,
store or folder), the run directory it belongs to, and the last outer step its store holds for
sure in ``<run dir>/tracking.json``, so that ``resume=`` continues the same tracker run and
never logs a step twice; rows that a tracker does not hold (a tracker added on resume, rows
lost by a crash) are caught up from metrics.csv. A copied run directory (``cp -a``) gets
tracker runs of its own instead of continuing the original's; a moved one continues them. A
tracker that is not installed or whose server does not answer is a one-line
:class:`hpo_cli.runner.errors.ConfigError` before training; one that fails during the run is
switched off with a warning, and metrics.csv and the checkpoints never depend on it.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from importlib.metadata import version
from pathlib import Path
from typing import Any

from hpo_cli.runner.rundir.directory import RunDirectory
from hpo_cli.runner.tracking.base import (
    RunInfo,
    Scalar,
    Tracker,
    TrackerUnavailable,
    TrackingSettings,
)
from hpo_cli.runner.tracking.mlflow_tracker import MLflowTracker
from hpo_cli.runner.tracking.tensorboard_tracker import TensorBoardTracker
from hpo_cli.runner.tracking.wandb_tracker import WandbTracker

__all__ = [
    "TRACKERS",
    "TRACKER_NAMES",
    "RunInfo",
    "Tracker",
    "TrackerUnavailable",
    "Trackers",
    "TrackingSettings",
    "flatten",
    "log_sweep",
    "numeric_values",
    "open_trackers",
]

log = logging.getLogger(__name__)
TRACKERS: dict[str, type[Tracker]] = {
    tracker.name: tracker for tracker in (TensorBoardTracker, MLflowTracker, WandbTracker)
}
TRACKER_NAMES = tuple(TRACKERS)


def flatten(tree: Any, prefix: str = "") -> dict[str, Scalar]:
    """``{"solver": {"terms": 3}}`` → ``{"solver.terms": 3}``; lists become their JSON text and
    ``None`` the string ``"null"``, since trackers take scalars only."""
    if isinstance(tree, dict):
        flat: dict[str, Scalar] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    key = prefix[:-1]
    if isinstance(tree, (bool, int, float, str)):
        return {key: tree}
    return {key: json.dumps(tree)}


def numeric_values(row: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics row (booleans as 0/1), without ``outer_step``: what
    trackers plot. Text columns (solver status, the inner optimiser's JSON state) are left out."""
    values = {}
    for key, value in row.items():
        if key == "outer_step" or isinstance(value, str) or not isinstance(value, numbers.Real):
            continue
        if math.isfinite(float(value)):
            values[key] = float(value)
    return values


class Trackers:
    """The trackers of one run (possibly none): started on the first row, each switched off
    for good at its first exception.

    ``tracking.json`` holds, per tracker, its run (what :meth:`Tracker.start` returned), the
    run directory it belongs to (:meth:`RunDirectory.identity`) and ``logged_until``: the last
    outer step the tracker's store holds for sure. A tracker that writes as it is called
    (:attr:`Tracker.durable`) advances it row by row; W&B, which writes through its own
    process, says at each start what its files hold, and the rows after that are sent again.

    Args:
        run_dir: the run directory (``tracking.json`` is kept there).
        info: what the trackers record about the run.
        trackers: name → tracker, already :meth:`Tracker.check`-ed.
    """

    def __init__(self, run_dir: Path, info: RunInfo, trackers: dict[str, Tracker]) -> None:
        self.files = RunDirectory(run_dir)
        self.info = info
        self.active = dict(trackers)
        self.states: dict[str, dict[str, Any]] = self.files.read_tracking()
        self.sent: dict[str, int] = {}  # the last step handed to each tracker in this session
        self.started = False

    def _save(self) -> None:
        self.files.write_tracking(self.states)

    def _guard(self, name: str, action: str, call: Any) -> bool:
        try:
            call()
        except Exception as error:  # a tracker must never stop the run
            message = f"{type(error).__name__}: {error}".splitlines()[0]
            log.warning(
                "tracking.trackers=%s failed (%s: %s) and is switched off for the rest of the run; "
                "metrics.csv and the checkpoints are not affected",
                name,
                action,
                message,
            )
            self.active.pop(name, None)
            self.states.setdefault(name, {})["disabled"] = f"{action}: {message}"
            self._save()
            return False
        return True

    def _previous(self, name: str, tracker: Tracker) -> dict[str, Any] | None:
        """The tracker's run to continue: ``None`` for none yet, or for one of the directory
        this one was copied from (unless the tracker's files are the directory's own), which
        keeps its runs; the copy gets runs of its own, metrics.csv replayed into them."""
        previous = self.states.get(name)
        if previous is None or "run_id" not in previous:
            return None
        original = self.files.copied_from(previous)
        if original is not None and not tracker.stored_in_run_dir:
            log.warning(
                "tracking.trackers=%s: %s is a copy of %s, whose %s run it does not continue; "
                "it gets a run of its own, with the metrics so far",
                name,
                self.files.path,
                original,
                name,
            )
            return None
        return previous

    def _start(self) -> None:
        if self.started:
            return
        self.started = True
        identity = self.files.identity()
        for name, tracker in list(self.active.items()):
            previous = self._previous(name, tracker)

            def start(name: str = name, tracker: Tracker = tracker, previous: Any = previous):
                state = tracker.start(self.info, previous)
                logged = -1 if previous is None else previous.get("logged_until", -1)
                logged = state.pop("logged_until", logged)  # what the store says it holds
                self.states[name] = {**state, **identity, "logged_until": logged}
                self.sent[name] = logged

            self._guard(name, "start", start)
        self._save()

    def _send(self, row: dict[str, Any]) -> None:
        step = int(row["outer_step"])
        values = numeric_values(row)
        durable = False
        for name, tracker in list(self.active.items()):
            if step <= self.sent[name]:
                continue  # the tracker has it already
            if self._guard(name, f"outer step {step}", lambda t=tracker: t.log_row(values, step)):
                self.sent[name] = step
                if tracker.durable:
                    self.states[name]["logged_until"] = step
                    durable = True
        if durable:
            self._save()

    def _catch_up(self, before: float) -> None:
        """Send the rows of metrics.csv before outer step ``before`` that a tracker lacks."""
        for row in self.files.read_metrics():
            if row["outer_step"] < before:
                self._send(row)

    def log_row(self, row: dict[str, Any]) -> None:
        """Send one metrics row (already in metrics.csv) to every tracker that lacks it."""
        if not self.active:
            return
        if not self.started:
            self._start()
            self._catch_up(before=int(row["outer_step"]))
        self._send(row)

    def finish(self, status: str) -> None:
        """Catch up with metrics.csv, attach the run's files, tag ``status`` and close."""
        if not self.active:
            return
        self._start()
        self._catch_up(before=math.inf)
        artifacts = self.files.artifacts()
        tags = {**self.info.tags, "status": status}
        for name, tracker in list(self.active.items()):
            if self._guard(name, "finish", lambda t=tracker: t.finish(status, artifacts, tags)):
                self.states[name]["status"] = status
        self._save()

    def locations(self) -> list[str]:
        """``name: where to look`` for every tracker still on."""
        return [f"{name}: {tracker.location()}" for name, tracker in self.active.items()]


def open_trackers(
    names: list[str], run_dir: Path, info: RunInfo, settings: TrackingSettings
) -> Trackers:
    """:class:`Trackers` for ``names`` after checking that each can be used.

    Raises:
        TrackerUnavailable: a package is missing or a server does not answer (one line).
    """
    trackers = {}
    for name in names:
        TRACKERS[name].check(settings)
        trackers[name] = TRACKERS[name]()
    return Trackers(run_dir, info, trackers)


def hpo_cli_version() -> str:
    return version("hpo-cli")


def sweep_best_metrics(best: dict[str, Any] | None) -> dict[str, float]:
    """The best setting's numbers as a tracker takes them: ``best_val_error_mean``,
    ``best_val_error_std`` … ``best_seeds``, ``best_failed`` (finite values only)."""
    if best is None:
        return {}
    values = {
        f"best_{key}": float(value)
        for key, value in best.items()
        if key not in ("setting", "rank") and isinstance(value, numbers.Real)
    }
    return {key: value for key, value in values.items() if math.isfinite(value)}


def log_sweep(
    sweep_dir: Path,
    job_dirs: list[Path],
    files: list[Path],
    failed: int,
    best: dict[str, Any] | None = None,
) -> None:
    """Add a ``sweep summary`` run with the sweep's files (sweep.csv, sweep_best.csv,
    sweep_summary.csv, sweep_failures.csv, sweep.png) to the MLflow experiment / W&B group of the
    sweep's jobs, with the best setting (``best``: a row of the ranking in
    :mod:`hpo_cli.runner.sweeps.ranking`) as the tag ``best_setting`` and its numbers as
    metrics (:func:`sweep_best_metrics`); its id goes to ``<sweep dir>/tracking.json``, with
    the best setting and its numbers under ``best``. Each failure is one warning."""
    states: dict[str, list[dict[str, Any]]] = {}
    for job_dir in job_dirs:
        for name, state in RunDirectory(job_dir).read_tracking().items():
            if "run_id" in state:
                states.setdefault(name, []).append(state)
    tags = {"hpo_cli_version": hpo_cli_version(), "status": "completed" if not failed else "failed"}
    tags.update(kind="sweep_summary", jobs=str(len(job_dirs)), failed_jobs=str(failed))
    tags["best_setting"] = best["setting"] if best else "none"
    values = sweep_best_metrics(best)
    summary: dict[str, Any] = {}
    for name, job_states in states.items():
        try:
            state = TRACKERS[name].log_sweep(sweep_dir, job_states, files, tags, values)
        except Exception as error:
            log.warning("tracking.trackers=%s: the sweep summary was not logged (%s)", name, error)
            continue
        if state is not None:
            summary[name] = state
    if summary:
        summary["best"] = {"setting": tags["best_setting"], **values}
        RunDirectory(sweep_dir).write_tracking(summary)
