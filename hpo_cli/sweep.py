"""Aggregate an ``hpo-run -m`` sweep: every job's metrics in one table, mean ± std per setting.

    python -m hpo_cli.sweep outputs/multirun/<date>/<time>

A *setting* is the values of the swept overrides other than ``seed`` (``solver=cg``); the seeds
of a setting are its repeats. Writes into the sweep directory:

* ``sweep.csv``: every row of every job's ``metrics.csv`` with ``job``, ``setting`` and ``seed``;
* ``sweep_summary.csv``: per setting, the number of jobs and the mean and standard deviation
  (ddof 1) of the final validation and test loss and error;
* ``sweep.png`` / ``sweep.pdf``: mean ± std of validation loss and test error against outer
  steps, one curve per setting.

:class:`AggregateSweep` does the same at the end of every multirun (registered in
``conf/config.yaml``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
FINAL_COLUMNS = ("val_loss", "val_error", "test_loss", "test_error")
CURVES = {"val_loss": "validation loss", "test_error": "test error"}


def _parse(overrides: list[str]) -> dict[str, str]:
    return dict(override.split("=", 1) for override in overrides if "=" in override)


def collect(sweep_dir: Path) -> pd.DataFrame:
    """Every job's ``metrics.csv`` under ``sweep_dir`` (jobs in sub-folders with ``.hydra``),
    with the columns ``job``, ``setting`` (the swept overrides other than ``seed``, e.g.
    ``solver=cg``) and ``seed`` in front.

    Raises:
        ValueError: no job of the sweep has written metrics.
    """
    jobs = {}
    for metrics in sorted(sweep_dir.glob("*/metrics.csv")):
        overrides_file = metrics.parent / ".hydra" / "overrides.yaml"
        if overrides_file.exists() and metrics.stat().st_size > 0:
            jobs[metrics.parent] = _parse(list(OmegaConf.load(overrides_file)))
    if not jobs:
        raise ValueError(f"no job under {sweep_dir} has written metrics.csv")
    keys = sorted({key for overrides in jobs.values() for key in overrides} - {"seed"})
    swept = [key for key in keys if len({o.get(key) for o in jobs.values()}) > 1]
    frames = []
    for job_dir, overrides in jobs.items():
        frame = pd.read_csv(job_dir / "metrics.csv")
        setting = " ".join(f"{key}={overrides.get(key)}" for key in swept) or "(one setting)"
        seed = overrides.get("seed")
        frame.insert(0, "seed", None if seed is None else int(seed))
        frame.insert(0, "setting", setting)
        frame.insert(0, "job", job_dir.name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Per setting: ``jobs`` and ``<column>_mean`` / ``<column>_std`` of each job's last row."""
    finals = table.groupby("job", sort=False).tail(1)
    grouped = finals.groupby("setting", sort=False)
    summary = grouped[list(FINAL_COLUMNS)].agg(["mean", "std"])
    summary.columns = [f"{column}_{stat}" for column, stat in summary.columns]
    summary.insert(0, "jobs", grouped.size())
    return summary.reset_index()


def plot_sweep(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Mean ± std over each setting's jobs of :data:`CURVES` against outer steps."""
    figure, axes = plt.subplots(1, len(CURVES), figsize=(5 * len(CURVES), 4))
    for axis, (column, label) in zip(axes, CURVES.items(), strict=True):
        for setting, rows in table.groupby("setting", sort=False):
            stats = rows.groupby("outer_step")[column].agg(["mean", "std"]).fillna(0.0)
            axis.plot(stats.index, stats["mean"], label=setting)
            low, high = stats["mean"] - stats["std"], stats["mean"] + stats["std"]
            axis.fill_between(stats.index, low, high, alpha=0.25)
        axis.set(xlabel="outer step", ylabel=f"{label} (mean ± std over seeds)")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    paths = [out_dir / "sweep.png", out_dir / "sweep.pdf"]
    for path in paths:
        figure.savefig(path, dpi=120)
    plt.close(figure)
    return paths


def aggregate(sweep_dir: Path) -> list[Path]:
    """Write ``sweep.csv``, ``sweep_summary.csv`` and the plots into ``sweep_dir``."""
    table = collect(sweep_dir)
    table.to_csv(sweep_dir / "sweep.csv", index=False)
    summarise(table).to_csv(sweep_dir / "sweep_summary.csv", index=False)
    return [sweep_dir / "sweep.csv", sweep_dir / "sweep_summary.csv", *plot_sweep(table, sweep_dir)]


class AggregateSweep(Callback):
    """Hydra callback: :func:`aggregate` the sweep directory when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            aggregate(sweep_dir)
        except ValueError as error:
            log.warning("sweep not aggregated: %s", error)
            return
        log.info("sweep aggregated into %s/sweep.csv", sweep_dir)


def main() -> None:
    for sweep_dir in sys.argv[1:]:
        print(*aggregate(Path(sweep_dir)), sep="\n")


if __name__ == "__main__":
    main()
