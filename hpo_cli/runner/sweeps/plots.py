"""``sweep.png`` / ``sweep.pdf`` of an ``hpo-run -m`` sweep, from the table that
:func:`hpo_cli.runner.sweeps.aggregate.collect` builds (every job's rows with ``job``, ``status``,
``setting`` and ``seed``). Apart from :mod:`hpo_cli.runner.sweeps.aggregate` so that the sweep
callback, which Hydra loads for every run, does not import matplotlib."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

CURVES = {"val_loss": "validation loss", "test_error": "test error"}


def plot_sweep(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """:func:`draw_sweep` into ``out_dir/sweep.png`` and ``sweep.pdf``."""
    figure = draw_sweep(table, f"sweep {out_dir.parent.name}/{out_dir.name}")
    paths = [out_dir / "sweep.png", out_dir / "sweep.pdf"]
    for path in paths:
        figure.savefig(path, dpi=120)
    plt.close(figure)
    return paths


def draw_sweep(table: pd.DataFrame, title: str) -> plt.Figure:
    """Mean ± std over each setting's completed jobs of :data:`CURVES` against outer steps
    (linear x); a setting with jobs that did not complete says so in its legend entry, and each
    such job's rows up to where it stopped are drawn dashed, ending in a cross."""
    figure, axes = plt.subplots(1, len(CURVES), figsize=(5 * len(CURVES), 4))
    jobs = table.groupby("job", sort=False)[["setting", "status"]].first()
    for axis, (column, label) in zip(axes, CURVES.items(), strict=True):
        for index, (setting, rows) in enumerate(table.groupby("setting", sort=False)):
            colour = f"C{index % 10}"
            statuses = jobs[jobs["setting"] == setting]["status"]
            failed = int((statuses != "completed").sum())
            name = setting if not failed else f"{setting} ({failed} of {len(statuses)} jobs failed)"
            completed = rows[rows["status"] == "completed"]
            if len(completed):
                stats = completed.groupby("outer_step")[column].agg(["mean", "std"]).fillna(0.0)
                axis.plot(stats.index, stats["mean"], color=colour, label=name)
                low, high = stats["mean"] - stats["std"], stats["mean"] + stats["std"]
                axis.fill_between(stats.index, low, high, color=colour, alpha=0.25)
                name = None
            for _, job_rows in rows[rows["status"] != "completed"].groupby("job", sort=False):
                axis.plot(
                    job_rows["outer_step"],
                    job_rows[column],
                    color=colour,
                    linestyle="--",
                    linewidth=1,
                    label=name,
                )
                axis.plot(
                    job_rows["outer_step"].iloc[-1:],
                    job_rows[column].iloc[-1:],
                    color=colour,
                    marker="x",
                    markersize=8,
                )
                name = None
        axis.set(xlabel="outer step", ylabel=f"{label} (mean ± std over seeds)", xscale="linear")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    failed_jobs = int((jobs["status"] != "completed").sum())
    title += f": {len(jobs)} jobs"
    if failed_jobs:
        title += f", {failed_jobs} did not complete (dashed, × where they stopped)"
    figure.suptitle(title, fontsize=10)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    return figure
