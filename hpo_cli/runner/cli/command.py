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

import contextlib
import copy
import logging
import math
import os
import shlex
import signal
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import configure_log
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hpo_cli.core import distributed
from hpo_cli.runner.cli.launch import from_environment
from hpo_cli.runner.cli.ranks import follow, job_group, rank_zero
from hpo_cli.runner.cli.signals import SIGINT, SIGTERM, StopRequest, stop_on_sigterm
from hpo_cli.runner.config.build import build_experiment
from hpo_cli.runner.config.schemas import register_configs
from hpo_cli.runner.config.tracking import trackers_for
from hpo_cli.runner.config.validation import validate
from hpo_cli.runner.errors import ConfigError, fail
from hpo_cli.runner.loop import train as loop
from hpo_cli.runner.loop.experiment import Experiment
from hpo_cli.runner.loop.progress import Progress, RunFailed, RunInterrupted
from hpo_cli.runner.loop.state import check_fits
from hpo_cli.runner.report.console import summary_block
from hpo_cli.runner.rundir.claim import Claim
from hpo_cli.runner.rundir.directory import RunDirectory
from hpo_cli.runner.rundir.writes import RunFileNotWritten
from hpo_cli.runner.tracking import Trackers

log = logging.getLogger("hpo_cli")
register_configs()


def _fail(message: str, code: int) -> NoReturn:
    fail("hpo-run", message, code)


def _refused(
    message: str,
    files: RunDirectory,
    cfg: DictConfig,
    overrides: list[str],
    multirun: bool,
    hydra_record: DictConfig | None,
) -> float:
    """A run refused before training (a value out of range): one line and exit code 2, with
    nothing written; in a multirun, the error goes to the job's summary.json where the job can
    claim its directory (not one that holds another run, or that another process writes), and
    NaN is returned."""
    if not multirun:
        _fail(message, 2)
    log.error("job refused: %s", message)
    fresh = not cfg.resume
    try:
        with files.claimed(cfg, overrides, hydra_record if fresh else None, fresh=fresh):
            files.write_summary(status="failed", progress=None, overrides=overrides, error=message)
    except ConfigError as error:
        log.error("job refused: %s", error)
    return math.nan


def train(
    cfg: DictConfig,
    run_dir: Path,
    trackers: Trackers | None = None,
    stop: StopRequest | None = None,
    experiment: Experiment | None = None,
) -> Progress:
    """Run or resume ``experiment`` (built from ``cfg`` when not given: the line after which
    nothing reads the configuration) in ``run_dir`` (:func:`hpo_cli.runner.loop.train.run`),
    stopping between two outer steps when ``stop`` gives a reason."""
    experiment = experiment or build_experiment(cfg)
    stop = stop or StopRequest()
    stop.training = True
    try:
        return loop.run(experiment, RunDirectory(run_dir), trackers, stop)
    finally:
        stop.training = False


def checked_experiment(cfg: DictConfig, files: RunDirectory) -> Experiment:
    """``cfg`` validated and built, and a resumed run's checkpoint checked against it: all that
    can refuse a run without writing anything.

    Raises:
        ConfigError: a value out of range, or a checkpoint that does not fit the model.
        InstantiationException: a ``_target_`` that cannot be built.
    """
    validate(cfg)
    experiment = build_experiment(cfg)
    if cfg.resume:
        state = files.load_checkpoint(warn=False)  # the loop's own load says it, once
        if state is not None:
            check_fits(experiment, state)
    return experiment


def execute(
    cfg: DictConfig,
    run_dir: Path,
    overrides: list[str],
    multirun: bool,
    hydra_record: DictConfig | None = None,
) -> float:
    """Run ``cfg`` in ``run_dir``: check and build it (:func:`checked_experiment`, writing
    nothing), then claim the directory (:meth:`RunDirectory.claimed`: its lock, the records
    in ``.hydra/`` with Hydra's ``hydra_record``, the log file) and :func:`train_and_report`
    there. A directory that holds another run or that another process writes is refused in one
    line (exit 2; NaN in a multirun, with nothing written). In a multirun, a job whose directory
    holds its own unfinished run (a requeued job) resumes it, in every process of the job as
    rank 0 finds it. Ranks ≠ 0 of a data-parallel run
    :func:`~hpo_cli.runner.cli.ranks.follow` instead, claiming and writing nothing.
    """
    files = RunDirectory(run_dir)
    if multirun and not cfg.resume:
        requeued = rank_zero() and files.interrupted_with(overrides)
        if distributed.from_rank_zero(requeued):
            log.info("resuming the interrupted run in %s (a requeued job)", run_dir)
            with open_dict(cfg):
                cfg.resume = str(run_dir)
    if not rank_zero():
        return follow(cfg, multirun)
    try:
        experiment = checked_experiment(cfg, files)
    except InstantiationException as error:
        message = str(error.__cause__ or error)
        return _refused(message, files, cfg, overrides, multirun, hydra_record)
    except ConfigError as error:
        return _refused(str(error), files, cfg, overrides, multirun, hydra_record)
    try:
        fresh = not cfg.resume  # a resume keeps the run's own record of how it was started
        with (
            files.claimed(cfg, overrides, hydra_record if fresh else None, fresh=fresh) as claim,
            stop_on_sigterm() as stop,
        ):
            return train_and_report(cfg, experiment, files, overrides, multirun, stop, claim)
    except ConfigError as error:  # the directory is another run's, or another process's
        if multirun:
            log.error("job refused: %s", error)
            return math.nan
        _fail(str(error), 2)
    except RunFileNotWritten as error:  # the disk refused the claim's records: nothing ran
        if multirun:
            log.error("job failed: %s", error)
            return math.nan
        _fail(f"{error}; nothing was run", 1)


def kept_files(run_dir: Path, failed: bool) -> str:
    """What a stopped run leaves, for its error line. A resume is suggested only after an
    interruption with a checkpoint: after a failure it would repeat the failure (a resume
    cannot change what decides the trajectory), and without a checkpoint it starts over."""
    if not RunDirectory(run_dir).checkpoint.exists():
        return f"the metrics so far are kept in {run_dir} (no checkpoint had been written yet)"
    kept = f"the metrics and the last checkpoint are kept in {run_dir}"
    return kept if failed else f"{kept} (continue with: {resume_command(run_dir)})"


def resume_command(run_dir: Path) -> str:
    """``hpo-run resume=<run dir>``, quoted for the shell (a path with spaces or quotes), after
    the ``PYTHONPATH`` the run had, if any (a user's own package is found through it); for a
    run of N processes, under ``torchrun`` or ``srun`` with as many (a checkpoint resumes at its
    count)."""
    command = f"hpo-run {shlex.quote(f'resume={run_dir}')}"
    launch = from_environment(os.environ)
    if launch.launcher == "srun":
        command = f"srun --ntasks={launch.world_size} {command}"
    elif launch.launcher == "torchrun" and launch.world_size > 1:
        processes = str(launch.world_size)
        local = os.environ.get("LOCAL_WORLD_SIZE", processes)
        options = f"--nproc_per_node={local}" if local == processes else "<the same options>"
        command = f"torchrun {options} $(which hpo-run) {shlex.quote(f'resume={run_dir}')}"
    python_path = os.environ.get("PYTHONPATH")
    return f"PYTHONPATH={shlex.quote(python_path)} {command}" if python_path else command


def train_and_report(
    cfg: DictConfig,
    experiment: Experiment,
    files: RunDirectory,
    overrides: list[str],
    multirun: bool,
    stop: StopRequest,
    claim: Claim,
) -> float:
    """Train ``experiment`` into its claimed directory, then write summary.json and the plots;
    one clear line and a non-zero exit on failure, or, in a multirun, the error in summary.json
    and NaN. A fresh run refused before training (a tracker that cannot be used) takes its
    claim back (:meth:`Claim.undo`).

    Args:
        cfg: the composed configuration (its trackers and plots).
        experiment: the run, built from ``cfg``.
        files: the run's directory, claimed.
        overrides: the command-line overrides, recorded in summary.json.
        multirun: whether the run is one job of a sweep.
        stop: asked between outer steps (SIGTERM).
        claim: what claiming the directory wrote.

    Returns:
        The final validation loss (the objective of an Optuna sweep), NaN for a failed job.
    """
    run_dir, trackers = files.path, None
    try:
        trackers = trackers_for(cfg, run_dir, overrides, multirun)
        progress = train(cfg, run_dir, trackers, stop, experiment)
    except ConfigError as error:
        if not multirun:
            if not cfg.resume and not files.has_metrics():
                claim.undo()
            _fail(str(error), 2)
        log.error("job refused: %s", error)
        files.write_summary(status="failed", progress=None, overrides=overrides, error=str(error))
        return math.nan
    except (RunFailed, KeyboardInterrupt) as error:
        failed = isinstance(error, RunFailed)
        status = "failed" if failed else "interrupted"
        progress = getattr(error, "progress", None)
        reason = str(error) or SIGINT
        try:
            files.write_summary(status=status, progress=progress, overrides=overrides, error=reason)
        except RunFileNotWritten as unwritten:  # a full disk: said on the same line
            reason = f"{reason}; {unwritten}"
        if cfg.plots and files.metrics.exists():
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
        files.write_summary(
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
        files.write_summary(status="failed", progress=None, overrides=overrides, error=message)
        if trackers is not None:
            trackers.finish("failed")
        return math.nan
    try:
        summary = files.write_summary(status="completed", progress=progress, overrides=overrides)
    except RunFileNotWritten as error:  # a full disk after the last step: the run failed
        message = f"{error}; {kept_files(run_dir, failed=True)}"
        if multirun:
            log.error("job failed: %s", message)
            return math.nan
        _fail(message, 1)
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
    plots, ``--help`` and a refused command start without matplotlib. A figure the disk refuses
    is a warning: the run's outcome stands, and the figures can be drawn again from its files."""
    from hpo_cli.runner.report.plots import plot_run

    try:
        plot_run(run_dir)
    except RunFileNotWritten as error:
        log.warning("%s; draw the plots again with: python -m hpo_cli.runner.report.plots", error)


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def run(cfg: DictConfig) -> float:
    """``hpo-run``'s Hydra task: :func:`execute` in Hydra's output directory; a sweep's job of
    N tasks started by submitit (``hydra.launcher.tasks_per_node``) as one run of N processes
    (:func:`~hpo_cli.runner.cli.ranks.job_group`)."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = list(hydra_cfg.overrides.task)
    with job_group() if multirun else contextlib.nullcontext():  # a submitit job of N tasks
        return execute(cfg, run_dir, overrides, multirun, HydraConfig.instance().cfg)


def run_composed(cfg: DictConfig) -> float:
    """One run from ``cfg`` as the preflight composed it (its ``hydra`` node included), as Hydra's
    run mode runs its task but without composing the configuration again: the mode and the
    output directory (``hydra.run.dir``, resolved once) recorded in the ``hydra`` node, which
    :class:`HydraConfig` then holds, Hydra's job logging configured, and :func:`execute` on the
    task configuration. ``.hydra/`` and the log file are the run's claim's, as in Hydra's path."""
    with read_write(cfg), open_dict(cfg):
        cfg.hydra.mode = RunMode.RUN
        cfg.hydra.overrides.hydra.append("hydra.mode=RUN")
        cfg.hydra.runtime.output_dir = os.path.abspath(str(OmegaConf.select(cfg, "hydra.run.dir")))
    HydraConfig.instance().set_config(cfg)
    configure_log(cfg.hydra.job_logging, cfg.hydra.verbose)
    task = copy.deepcopy(cfg)
    with read_write(task), open_dict(task):
        del task["hydra"]
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    run_dir = Path(hydra_cfg.runtime.output_dir)
    return execute(task, run_dir, overrides, False, HydraConfig.instance().cfg)
