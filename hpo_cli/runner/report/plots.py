"""PNG plots of a run, drawn from its files alone (so any past run can be re-plotted):
``metrics.csv``, ``summary.json`` (how the run ended) and ``.hydra/hydra.yaml`` (its choices).

python -m hpo_cli.runner.report.plots outputs/runs/2026-11-21/10-00-00

Every plot has the outer step on a linear x axis, a title naming the run's dataset, model,
hyperparameter module and solver, markers when there are few points (a run that failed at its
first step still shows its one row), and vertical lines where the monitored value was best, where
early stopping stopped the run and where it failed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from hpo_cli.core.solvers.base import Status
from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.loop.solver_health import RESIDUAL_LIMIT, doubtful
from hpo_cli.runner.rundir.directory import RunDirectory
from hpo_cli.runner.rundir.writes import RunFileNotWritten, replacing

SPLITS = ("train", "val", "test")
LABELS = {"train": "Training", "val": "Validation", "test": "Test"}
TITLE_GROUPS = ("dataset", "model", "hyper", "solver")
MARKERS_UP_TO = 50  # rows; more points draw as plain lines


def run_title(run_dir: Path) -> str:
    """``dataset · model · hyper · solver`` from Hydra's record of the run's choices, then the
    run's status when it did not complete; the folder's name when Hydra left no record."""
    choices = RunDirectory(run_dir).choices()
    parts = [run_dir.name]
    if choices:
        parts = [f"{choices.get(group)}" for group in TITLE_GROUPS if choices.get(group)]
    summary = RunDirectory(run_dir).read_summary()
    if summary and summary.get("status") not in (None, "completed"):
        parts.append(summary["status"])
    return " · ".join(parts)


def events(summary: dict[str, Any] | None) -> list[tuple[float, str, str, str]]:
    """``(outer step, label, colour, line style)`` of the run's best evaluation, its early stop
    and its failure, from summary.json."""
    if not summary:
        return []
    found = []
    best = summary.get("best")
    if best:
        found.append((best["step"], f"best {best['monitor']}", "tab:green", ":"))
    reason = summary.get("stop_reason") or ""
    if reason.startswith("early_stopping") and summary.get("outer_steps") is not None:
        found.append((summary["outer_steps"], "early stop", "tab:gray", "--"))
    if summary.get("status") in ("failed", "interrupted") and summary.get("outer_steps"):
        error = (summary.get("error") or "").strip().splitlines()
        label = summary["status"] + (f": {error[0][:60]}" if error else "")
        found.append((summary["outer_steps"], label, "tab:red", "--"))
    return found


def _style(metrics: pd.DataFrame) -> dict[str, Any]:
    return {"marker": "o", "markersize": 3} if len(metrics) <= MARKERS_UP_TO else {}


def _finish(axes: list[plt.Axes], summary: dict[str, Any] | None) -> None:
    """Outer step on every x axis (linear), event lines, one legend on the first axis, and a
    note on an axis with nothing to show (a run that failed before its first hyper-step)."""
    for axis in axes:
        if not any(pd.notna(line.get_ydata()).any() for line in axis.get_lines()):
            axis.text(0.5, 0.5, "no values recorded", transform=axis.transAxes, ha="center")
        for step, label, colour, style in events(summary):
            axis.axvline(step, color=colour, linestyle=style, linewidth=1, label=label)
        axis.set_xscale("linear")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set_xlabel("outer step")
    axes[0].legend(fontsize=8)


def plot_errors(metrics: pd.DataFrame, axis: plt.Axes) -> None:
    """Classification error of each split (seed 001's figure)."""
    for split in SPLITS:
        axis.plot(
            metrics["outer_step"], metrics[f"{split}_error"], label=LABELS[split], **_style(metrics)
        )
    axis.set(ylabel="error", ylim=(-0.02, 1.02))  # the same scale for every run


def plot_losses(metrics: pd.DataFrame, axis: plt.Axes) -> None:
    """Data loss (no penalty) of each split, log y."""
    for split in SPLITS:
        axis.plot(
            metrics["outer_step"], metrics[f"{split}_loss"], label=LABELS[split], **_style(metrics)
        )
    axis.set(yscale="log", ylabel="loss (no penalty)")


def plot_hyperparameters(metrics: pd.DataFrame, axis: plt.Axes) -> None:
    """Mean and range of the constrained hyperparameter values, log y."""
    steps = metrics["outer_step"]
    axis.plot(steps, metrics["hyper_mean"], label="mean", **_style(metrics))
    axis.fill_between(steps, metrics["hyper_min"], metrics["hyper_max"], alpha=0.3, label="range")
    axis.set(yscale="log", ylabel="hyperparameter value")


STATUS_COLOURS = {
    Status.CONVERGED: "tab:green",
    Status.APPROXIMATION: "tab:gray",
    Status.MAX_ITERATIONS: "tab:blue",
    Status.UNSTABLE: "tab:purple",
    Status.NEGATIVE_CURVATURE: "tab:orange",
    Status.DIVERGED: "black",
}
"""The marker colour of each solver status in solver.png (another status: tab:brown)."""


def plot_solver(metrics: pd.DataFrame, axes: list[plt.Axes]) -> None:
    """Hypergradient norm and the inverse-HVP residual, log y; each row's solver status as a
    coloured marker on the residual (at the top of the axis for a row without one), a red ring
    round a doubtful solve (:func:`hpo_cli.runner.loop.solver_health.doubtful`), and the
    residual 1 of x = 0."""
    top, bottom = axes
    top.plot(metrics["outer_step"], metrics["hypergrad_norm"], label="‖dL_v/dλ‖", **_style(metrics))
    top.set(yscale="log", ylabel="‖dL_v/dλ‖")
    plot_quality(metrics, top)
    bottom.plot(metrics["outer_step"], metrics["solver_residual"], color="0.6", linewidth=1)
    bottom.set(yscale="log", ylabel="‖Hx − b‖ / ‖b‖")
    solved = metrics[metrics["solver_status"].notna()]
    if solved.empty:
        return
    bottom.axhline(
        RESIDUAL_LIMIT, color="0.4", linestyle="--", linewidth=0.8, label="x = 0 (residual 1)"
    )
    residuals = pd.to_numeric(solved["solver_residual"], errors="coerce")
    known = residuals.notna()
    # rows without a residual (a diverged solve) sit at the top of the axis
    where = bottom.get_xaxis_transform()
    for status, rows in solved.groupby("solver_status", sort=True):
        colour = STATUS_COLOURS.get(status, "tab:brown")
        mine = known[rows.index]
        bottom.scatter(
            rows["outer_step"][mine],
            residuals[rows.index][mine],
            color=colour,
            s=16,
            label=status,
            zorder=3,
        )
        if (~mine).any():
            bottom.scatter(
                rows["outer_step"][~mine],
                [0.95] * int((~mine).sum()),
                color=colour,
                marker="x",
                s=24,
                transform=where,
                label=None if mine.any() else status,
                zorder=3,
            )
    flagged = [
        doubtful(status, None if pd.isna(residual) else float(residual))
        for status, residual in zip(solved["solver_status"], residuals, strict=True)
    ]
    ringed = solved[flagged]
    if not ringed.empty:
        heights = residuals[ringed.index]
        bottom.scatter(
            ringed["outer_step"][heights.notna()],
            heights[heights.notna()],
            s=60,
            facecolors="none",
            edgecolors="tab:red",
            linewidths=1,
            label="doubtful",
            zorder=4,
        )
    bottom.legend(fontsize=7, title="solver status", title_fontsize=7, loc="best")


def plot_quality(metrics: pd.DataFrame, axis: plt.Axes) -> None:
    """``quality_every``'s cosine of each probed hypergradient with its reference, on a right-hand
    axis of ``axis`` (nothing for a run without probes)."""
    if "hypergrad_cosine" not in metrics:
        return
    probed = metrics[pd.to_numeric(metrics["hypergrad_cosine"], errors="coerce").notna()]
    if probed.empty:
        return
    right = axis.twinx()
    right.plot(
        probed["outer_step"],
        probed["hypergrad_cosine"],
        color="tab:green",
        marker="D",
        markersize=3,
        linewidth=1,
        label="cos(dL_v/dλ, unrolled reference)",
    )
    right.set(ylim=(-1.05, 1.05), ylabel="cosine with the reference")
    right.legend(fontsize=7, loc="lower right")


PLOTS = {
    "errors.png": (plot_errors, 1),
    "losses.png": (plot_losses, 1),
    "hyperparameters.png": (plot_hyperparameters, 1),
    "solver.png": (plot_solver, 2),
}
"""File name → (drawing function, number of stacked axes)."""


def draw(run_dir: Path, name: str) -> plt.Figure:
    """The figure of :data:`PLOTS` ``name`` for the run in ``run_dir`` (not saved)."""
    plot, rows = PLOTS[name]
    metrics = RunDirectory(run_dir).read_metrics_frame(rows=False)
    figure, axes = plt.subplots(rows, 1, figsize=(6, 2.5 + 2 * rows), sharex=True, squeeze=False)
    axes = list(axes[:, 0])
    plot(metrics, axes if rows > 1 else axes[0])
    _finish(axes, RunDirectory(run_dir).read_summary())
    figure.suptitle(run_title(run_dir), fontsize=10)
    figure.tight_layout()
    return figure


def plot_run(run_dir: Path) -> list[Path]:
    """Draw every plot of :data:`PLOTS` from the run's files into ``run_dir``, each file whole
    or not at all.

    Raises:
        RunFileNotWritten: the disk refused one (full, a file-size limit).
    """
    paths = []
    for name in PLOTS:
        figure = draw(run_dir, name)
        try:
            with replacing(run_dir / name) as partial:
                figure.savefig(partial, dpi=120, format="png")
        finally:
            plt.close(figure)
        paths.append(run_dir / name)
    return paths


def main() -> None:
    """``python -m hpo_cli.runner.report.plots DIR...``: redraw each run's figures; a damaged or
    missing run file is one line, exit 2; a figure the disk refuses, exit 1."""
    if len(sys.argv) < 2:
        print(f"usage: python -m {__spec__.name} RUN_DIR...", file=sys.stderr)
        sys.exit(2)
    for run_dir in sys.argv[1:]:
        try:
            RunDirectory(Path(run_dir)).read_metrics_frame()  # a run with rows to draw
            paths = plot_run(Path(run_dir))
        except ConfigError as error:
            print(f"python -m hpo_cli.runner.report.plots: error: {error}", file=sys.stderr)
            sys.exit(2)
        except RunFileNotWritten as error:  # a full disk
            print(f"python -m hpo_cli.runner.report.plots: error: {error}", file=sys.stderr)
            sys.exit(1)
        print(*paths, sep="\n")


if __name__ == "__main__":
    main()
