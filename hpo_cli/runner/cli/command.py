"""``hpo-run``: the experiment runner.

    hpo-run                                   # the default experiment (digits, offline)
    hpo-run solver=cg device=cuda             # pick a solver and a device
    hpo-run -m solver=neumann,cg seed=0,1,2   # a sweep, one run directory per job
    hpo-run resume=outputs/runs/<date>/<time> # continue an interrupted run
    hpo-run --config-dir my/conf model=my_net # a config directory of one's own, beside hpo-cli's

Results land in Hydra's run directory (``outputs/runs/...``): metrics.csv, summary.json,
hyperparameters.pt/.json (λ in full, :func:`hpo_cli.load_run` reloads the run),
checkpoint.pt, PNG plots and Hydra's log. A run returns its final validation loss, the objective
of a ``hydra/sweeper=optuna_tpe`` search. In a multirun, a job that fails records its error in its
summary.json and returns NaN instead of exiting, so the launcher goes on with the other jobs; the
sweep's aggregation (:mod:`hpo_cli.runner.sweeps.aggregate`) then names it and the multirun
exits with status 1.
"""

from __future__ import annotations

import logging
import math
import shlex
import signal
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from hpo_cli.runner.cli.signals import SIGINT, SIGTERM, StopRequest, stop_on_sigterm
from hpo_cli.runner.config.build import build_experiment
from hpo_cli.runner.config.schemas import register_configs
from hpo_cli.runner.config.tracking import trackers_for
from hpo_cli.runner.config.validation import validate
from hpo_cli.runner.errors import ConfigError, fail
from hpo_cli.runner.loop import train as loop
from hpo_cli.runner.loop.progress import Progress, RunFailed, RunInterrupted
from hpo_cli.runner.loop.state import check_fits
from hpo_cli.runner.report.console import summary_block
from hpo_cli.runner.rundir.directory import RunDirectory
from hpo_cli.runner.rundir.lock import RunLocked
from hpo_cli.runner.tracking import Trackers

log = logging.getLogger("hpo_cli")
register_configs()


def _fail(message: str, code: int) -> NoReturn:
    fail("hpo-run", message, code)


def _refused(message: str, run_dir: Path, overrides: list[str], multirun: bool) -> float:
    """A run refused before training (a value out of range): one line and exit code 2; in a
    multirun, the error goes to the job's summary.json (unless its folder holds another run's
    metrics) and NaN is returned."""
    if not multirun:
        _fail(message, 2)
    if not RunDirectory(run_dir).metrics.exists():
        RunDirectory(run_dir).write_summary(
            status="failed", progress=None, overrides=overrides, error=message
        )
    log.error("job refused: %s", message)
    return math.nan


def train(
    cfg: DictConfig,
    run_dir: Path,
    trackers: Trackers | None = None,
    stop: StopRequest | None = None,
    overrides: list[str] | None = None,
) -> Progress:
    """Build the experiment of ``cfg`` (the line after which nothing reads the configuration)
    and run or resume it in ``run_dir`` (:func:`hpo_cli.runner.loop.train.run`), stopping
    between two outer steps when ``stop`` gives a reason. A resume given its ``overrides``
    saves its configuration in ``.hydra/`` once its checkpoint is known to fit the model."""
    experiment, files = build_experiment(cfg), RunDirectory(run_dir)
    if cfg.resume and overrides is not None:
        state = files.load_checkpoint()
        if state is not None:
            check_fits(experiment, state)
        files.save_config(cfg, overrides)
    stop = stop or StopRequest()
    stop.training = True
    try:
        return loop.run(experiment, files, trackers, stop)
    finally:
        stop.training = False


def execute(cfg: DictConfig, run_dir: Path, overrides: list[str], multirun: bool) -> float:
    """Validate ``cfg``, then hold ``run_dir``'s lock (:mod:`hpo_cli.runner.rundir.lock`) and
    :func:`train_and_report` there; a directory another process writes is refused in one line
    (exit 2; NaN in a multirun, with nothing written).
    """
    try:
        validate(cfg)
    except ConfigError as error:
        return _refused(str(error), run_dir, overrides, multirun)
    try:
        with RunDirectory(run_dir).locked():
            return train_and_report(cfg, run_dir, overrides, multirun)
    except RunLocked as error:
        if multirun:
            log.error("job refused: %s", error)
            return math.nan
        _fail(str(error), 2)


def kept_files(run_dir: Path, failed: bool) -> str:
    """What a stopped run leaves, for its error line. A resume is suggested only after an
    interruption with a checkpoint: after a failure it would repeat the failure (a resume
    cannot change what decides the trajectory), and without a checkpoint it starts over."""
    if not RunDirectory(run_dir).checkpoint.exists():
        return f"the metrics so far are kept in {run_dir} (no checkpoint had been written yet)"
    kept = f"the metrics and the last checkpoint are kept in {run_dir}"
    return kept if failed else f"{kept} (continue with: {resume_command(run_dir)})"


def resume_command(run_dir: Path) -> str:
    """``hpo-run resume=<run dir>``, quoted for the shell (a path with spaces or quotes)."""
    return f"hpo-run {shlex.quote(f'resume={run_dir}')}"


def train_and_report(cfg: DictConfig, run_dir: Path, overrides: list[str], multirun: bool) -> float:
    """Train into ``run_dir``, then write summary.json and the plots; one clear line
    and a non-zero exit on failure, or, in a multirun, the error in summary.json and NaN. A
    resume saves its configuration in ``.hydra/`` only once it has passed validation.

    Args:
        cfg: the composed configuration.
        run_dir: the run's directory.
        overrides: the command-line overrides, recorded in summary.json.
        multirun: whether the run is one job of a sweep.

    Returns:
        The final validation loss (the objective of an Optuna sweep), NaN for a failed job.
    """
    if multirun and not cfg.resume and RunDirectory(run_dir).interrupted_with(overrides):
        log.info("resuming the interrupted run in %s (a requeued job)", run_dir)
        with open_dict(cfg):
            cfg.resume = str(run_dir)
    with stop_on_sigterm() as stop:
        return _train_and_report(cfg, run_dir, overrides, multirun, stop)


def _train_and_report(
    cfg: DictConfig, run_dir: Path, overrides: list[str], multirun: bool, stop: StopRequest
) -> float:
    trackers = None
    try:
        trackers = trackers_for(cfg, run_dir, overrides, multirun)
        progress = train(cfg, run_dir, trackers, stop, overrides)
    except InstantiationException as error:
        return _refused(str(error.__cause__ or error), run_dir, overrides, multirun)
    except ConfigError as error:
        return _refused(str(error), run_dir, overrides, multirun)
    except (RunFailed, KeyboardInterrupt) as error:
        failed = isinstance(error, RunFailed)
        status = "failed" if failed else "interrupted"
        progress = getattr(error, "progress", None)
        reason = str(error) or SIGINT
        RunDirectory(run_dir).write_summary(
            status=status, progress=progress, overrides=overrides, error=reason
        )
        if cfg.plots and RunDirectory(run_dir).metrics.exists():
            draw_plots(run_dir)
        if trackers is not None:
            trackers.finish(status)
        message = f"{reason}; {kept_files(run_dir, failed)}"
        if failed and multirun:
            log.error("job failed: %s", message)
            return math.nan
        sigterm = isinstance(error, RunInterrupted) and reason == SIGTERM
        _fail(message, 1 if failed else (128 + signal.SIGTERM if sigterm else 130))
    except SystemExit:  # e.g. submitit's requeue on its preemption signal (USR2)
        RunDirectory(run_dir).write_summary(
            status="interrupted", progress=None, overrides=overrides, error="exited (SystemExit)"
        )
        if trackers is not None:
            trackers.finish("interrupted")
        raise
    except Exception as error:  # a bug: in a multirun, recorded so that the other jobs run
        if not multirun:
            raise
        log.exception("job failed")
        message = f"{type(error).__name__}: {error}"
        RunDirectory(run_dir).write_summary(
            status="failed", progress=None, overrides=overrides, error=message
        )
        if trackers is not None:
            trackers.finish("failed")
        return math.nan
    summary = RunDirectory(run_dir).write_summary(
        status="completed", progress=progress, overrides=overrides
    )
    if cfg.plots:
        draw_plots(run_dir)
    trackers.finish("completed")
    closing = [*hyperparameters_line(run_dir), *trackers.locations()]
    log.info("%s", summary_block(summary, run_dir, closing))
    return float(summary["final"]["val_loss"])


def hyperparameters_line(run_dir: Path) -> list[str]:
    """The closing block's line naming the files that hold λ in full (none: no line)."""
    files = RunDirectory(run_dir).hyperparameter_files()
    if not files:
        return []
    names = ", ".join(path.name for path in files)
    return [f"hyperparameters in full: {names} (hpo_cli.load_run(run_dir) reloads the run)"]


def draw_plots(run_dir: Path) -> None:
    """The run's PNG plots (:mod:`hpo_cli.runner.report.plots`), imported here so that a run without
    plots, ``--help`` and a refused command start without matplotlib."""
    from hpo_cli.runner.report.plots import plot_run

    plot_run(run_dir)


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def run(cfg: DictConfig) -> float:
    """``hpo-run``'s Hydra task: :func:`execute` in Hydra's output directory."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return execute(cfg, run_dir, list(hydra_cfg.overrides.task), multirun)
