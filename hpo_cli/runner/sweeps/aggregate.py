"""Aggregate an ``hpo-run -m`` sweep: every job's metrics in one table, the settings ranked by
their jobs' best validation error, and the jobs that failed.

    python -m hpo_cli.runner.sweeps.aggregate outputs/multirun/<date>/<time>

A *setting* is the values of the swept overrides other than ``seed`` (``solver=cg``); the seeds
of a setting are its repeats. A job's status is the one its ``summary.json`` records
(``completed``, ``failed``, ``interrupted``), or ``unfinished`` when it wrote none (still
running, or killed). Writes into the sweep directory:

* ``sweep.csv``: every row of every job's ``metrics.csv`` with ``job``, ``status``, ``setting``
  and ``seed``;
* ``sweep_best.csv``: per job, its best-by-validation row (``summary.json``'s
  ``best_by_validation``: lowest validation error, ties by validation loss), not its final one;
* ``sweep_summary.csv``: the settings ranked, best first (:mod:`.ranking`): per setting, the
  number of completed seeds, of jobs that did not complete, and mean and standard deviation
  (ddof 1) over the seeds of their best rows' validation and test error and loss;
* ``sweep.png`` / ``sweep.pdf``: mean ± std over the completed jobs of validation loss and test
  error against outer steps, one curve per setting;
* ``sweep_failures.csv``: every job that did not complete (``job``, ``status``, ``overrides``,
  the first line of its ``error``); only the header when none failed.

:class:`AggregateSweep` does the same at the end of every multirun (registered in
``conf/config.yaml``), prints the ranking (at most 20 settings) and the ``best:`` line, adds a
``sweep summary`` run with these files and the best setting's numbers to the jobs' MLflow
experiment or W&B group (:func:`hpo_cli.runner.tracking.log_sweep`) and, when a job failed,
names it and ends the multirun with exit status 1. The script prints the same ranking, and
exits with status 1 too when a job of the sweep did not complete.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.rundir.directory import RunDirectory
from hpo_cli.runner.rundir.reading import RunDirectoryDamaged
from hpo_cli.runner.sweeps import ranking
from hpo_cli.runner.tracking import log_sweep

log = logging.getLogger(__name__)
TABLES = ("sweep.csv", "sweep_best.csv", "sweep_summary.csv", "sweep_failures.csv")
FAILURE_COLUMNS = ["job", "status", "overrides", "error"]


def _parse(overrides: list[str]) -> dict[str, str]:
    return dict(override.split("=", 1) for override in overrides if "=" in override)


def _job_number(job_dir: Path) -> tuple[int, str]:
    return (int(job_dir.name), "") if job_dir.name.isdigit() else (-1, job_dir.name)


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job folders of a sweep (sub-folders with ``.hydra/overrides.yaml``), in job order."""
    found = [path.parent.parent for path in sweep_dir.glob("*/.hydra/overrides.yaml")]
    return sorted(found, key=_job_number)


def job_overrides(job_dir: Path) -> list[str]:
    """The command-line overrides of one job, as Hydra saved them."""
    return RunDirectory(job_dir).overrides()


def job_status(job_dir: Path) -> tuple[str, str | None]:
    """``(status, error)`` from the job's ``summary.json``; ``("unfinished", ...)`` without one."""
    files = RunDirectory(job_dir)
    content = files.read_summary()
    if content is None:
        return "unfinished", "no summary.json: the job was killed, crashed or is still running"
    if not isinstance(content.get("status"), str):
        raise RunDirectoryDamaged(files.summary, "is damaged (it records no status)")
    return content["status"], content.get("error")


def swept_keys(jobs: dict[Path, dict[str, str]]) -> list[str]:
    """The override keys whose values differ between the jobs (sorted)."""
    keys = sorted({key for overrides in jobs.values() for key in overrides})
    return [key for key in keys if len({o.get(key) for o in jobs.values()}) > 1]


def failures(sweep_dir: Path) -> pd.DataFrame:
    """One row per job of the sweep that did not complete, with the columns
    :data:`FAILURE_COLUMNS`: ``overrides`` are the job's swept ones (its whole command line is
    in ``<job>/.hydra/overrides.yaml``), ``error`` the first line of its error."""
    jobs = {job_dir: _parse(job_overrides(job_dir)) for job_dir in job_dirs(sweep_dir)}
    swept = swept_keys(jobs)
    rows = []
    for job_dir, overrides in jobs.items():
        status, error = job_status(job_dir)
        if status != "completed":
            lines = (error or "").strip().splitlines()
            keys = swept or list(overrides)
            shown = " ".join(f"{key}={overrides[key]}" for key in keys if key in overrides)
            rows.append([job_dir.name, status, shown, lines[0] if lines else ""])
    return pd.DataFrame(rows, columns=FAILURE_COLUMNS)


def settings(sweep_dir: Path) -> dict[Path, tuple[str, int | None]]:
    """Job folder → ``(setting, seed)`` for every job of the sweep: the setting is the overrides
    swept over all its jobs (failed ones included) other than ``seed``, e.g. ``solver=cg``, or
    ``(one setting)``."""
    jobs = {job_dir: _parse(job_overrides(job_dir)) for job_dir in job_dirs(sweep_dir)}
    swept = [key for key in swept_keys(jobs) if key != "seed"]
    found = {}
    for job_dir, overrides in jobs.items():
        setting = " ".join(f"{key}={overrides.get(key)}" for key in swept) or "(one setting)"
        seed = overrides.get("seed")
        found[job_dir] = (setting, None if seed is None else int(seed))
    return found


def collect(sweep_dir: Path) -> pd.DataFrame:
    """Every job's ``metrics.csv`` under ``sweep_dir`` (jobs in sub-folders with ``.hydra``),
    with the columns ``job``, ``status`` (see :func:`job_status`), ``setting`` and ``seed`` (see
    :func:`settings`) in front.

    Raises:
        ValueError: no job of the sweep has written metrics.
    """
    jobs = {
        job_dir: found
        for job_dir, found in settings(sweep_dir).items()
        if RunDirectory(job_dir).has_metrics()
    }
    if not jobs:
        raise ValueError(f"no job under {sweep_dir} has written metrics.csv")
    frames = []
    for job_dir, (setting, seed) in jobs.items():
        frame = RunDirectory(job_dir).read_metrics_frame(rows=False)
        frame.insert(0, "seed", seed)
        frame.insert(0, "setting", setting)
        frame.insert(0, "status", job_status(job_dir)[0])
        frame.insert(0, "job", job_dir.name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def best_rows(sweep_dir: Path) -> pd.DataFrame:
    """Every job's best-by-validation row, as ``summary.json`` records it
    (:func:`.ranking.best_rows`); empty values for a job without one."""
    jobs = []
    for job_dir, (setting, seed) in settings(sweep_dir).items():
        summary = RunDirectory(job_dir).read_summary() or {}
        jobs.append(
            {
                "job": job_dir.name,
                "status": summary.get("status", "unfinished"),
                "setting": setting,
                "seed": seed,
                "best": summary.get("best_by_validation"),
            }
        )
    return ranking.best_rows(jobs)


def rank(sweep_dir: Path) -> pd.DataFrame:
    """The settings of the sweep ranked by their jobs' best rows (:func:`.ranking.rank`)."""
    return ranking.rank(best_rows(sweep_dir))


def aggregate(sweep_dir: Path) -> list[Path]:
    """Write ``sweep_failures.csv``, then ``sweep.csv``, ``sweep_best.csv``,
    ``sweep_summary.csv`` (the ranking) and the plots into ``sweep_dir``; return their paths.

    Raises:
        ValueError: no job of the sweep has written metrics (``sweep_failures.csv`` is written
            all the same).
        RunDirectoryDamaged: ``sweep_dir`` is not a directory (bad input), or a job's file is
            damaged.
    """
    if not sweep_dir.is_dir():
        raise RunDirectoryDamaged(sweep_dir, "is not a sweep directory (no such folder)")
    failures(sweep_dir).to_csv(sweep_dir / "sweep_failures.csv", index=False)
    table = collect(sweep_dir)
    table.to_csv(sweep_dir / "sweep.csv", index=False)
    best = best_rows(sweep_dir)
    best.to_csv(sweep_dir / "sweep_best.csv", index=False)
    ranking.rank(best).to_csv(sweep_dir / "sweep_summary.csv", index=False)
    from hpo_cli.runner.sweeps.plots import plot_sweep  # matplotlib only when a sweep ends

    plots = plot_sweep(table, sweep_dir)
    return [sweep_dir / name for name in TABLES] + plots


def read_ranking(sweep_dir: Path) -> pd.DataFrame:
    """``sweep_summary.csv`` as :func:`aggregate` wrote it."""
    table = pd.read_csv(sweep_dir / "sweep_summary.csv", dtype={"setting": str})
    table["rank"] = table["rank"].astype("Int64")
    return table


def describe_ranking(sweep_dir: Path) -> list[str]:
    """The console's ranking of an aggregated sweep (:func:`.ranking.console_lines`)."""
    return ranking.console_lines(read_ranking(sweep_dir), str(sweep_dir / "sweep_summary.csv"))


def describe_failures(sweep_dir: Path) -> list[str]:
    """Lines naming the jobs of the sweep that did not complete (none when all did): a count,
    then ``job N (overrides): error`` per job."""
    failed = failures(sweep_dir)
    if failed.empty:
        return []
    total = len(job_dirs(sweep_dir))
    lines = [
        f"{len(failed)} of {total} jobs did not complete (listed in "
        f"{sweep_dir / 'sweep_failures.csv'}):"
    ]
    for row in failed.itertuples():
        lines.append(f"  job {row.job} ({row.overrides}): {row.status}: {row.error}")
    return lines


class AggregateSweep(Callback):
    """Hydra callback: :func:`aggregate` the sweep directory when a multirun ends; when a job
    did not complete, name it on stderr and end the multirun with exit status 1."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            files = aggregate(sweep_dir)
            log.info("sweep aggregated into %s/sweep.csv", sweep_dir)
            print(*describe_ranking(sweep_dir), sep="\n", flush=True)
            best = ranking.best_setting(read_ranking(sweep_dir))
            failed = len(failures(sweep_dir))
            log_sweep(sweep_dir, job_dirs(sweep_dir), files, failed=failed, best=best)
        except ValueError as error:
            log.warning("sweep not aggregated: %s", error)
        lines = describe_failures(sweep_dir)
        if lines:
            print(f"hpo-run: error: {lines[0]}", *lines[1:], sep="\n", file=sys.stderr)
            raise SystemExit(1)  # Hydra ignores a callback's Exceptions, not SystemExit


def main() -> None:
    """``python -m hpo_cli.runner.sweeps.aggregate DIR...``: aggregate each sweep; exit 1 when a
    job failed, 2 when a job's file is damaged or the folder is missing (one line)."""
    if len(sys.argv) < 2:
        print(f"usage: python -m {__spec__.name} SWEEP_DIR...", file=sys.stderr)
        sys.exit(2)
    status = 0
    program = "python -m hpo_cli.runner.sweeps.aggregate"
    for sweep_dir in map(Path, sys.argv[1:]):
        try:
            try:
                print(*aggregate(sweep_dir), sep="\n")
                print(*describe_ranking(sweep_dir), sep="\n")
            except ConfigError:
                raise
            except ValueError as error:
                print(f"{program}: error: {error}", file=sys.stderr)
                status = max(status, 1)
            lines = describe_failures(sweep_dir)
        except ConfigError as error:  # a damaged run file
            print(f"{program}: error: {error}", file=sys.stderr)
            sys.exit(2)
        if lines:
            print("failed:", *lines, sep="\n", file=sys.stderr)
            status = max(status, 1)
    sys.exit(status)


if __name__ == "__main__":
    main()
