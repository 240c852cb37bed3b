"""PNG plots of a run, drawn from its ``metrics.csv`` alone (so any past run can be re-plotted).

python -m hpo_cli.runner.plots outputs/runs/2026-11-21/10-00-00
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

SPLITS = ("train", "val", "test")
LABELS = {"train": "Training", "val": "Validation", "test": "Test"}


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_errors(metrics: pd.DataFrame, path: Path) -> Path:
    """Classification error of each split against inner steps, log x (seed 001's figure)."""
    figure, axis = plt.subplots(figsize=(6, 4))
    steps = metrics["inner_steps"].clip(lower=1)
    for split in SPLITS:
        axis.plot(steps, metrics[f"{split}_error"], label=LABELS[split])
    axis.set(xscale="log", xlabel="inner steps", ylabel="error", ylim=(0, None))
    axis.legend()
    return _save(figure, path)


def plot_losses(metrics: pd.DataFrame, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(6, 4))
    for split in SPLITS:
        axis.plot(metrics["inner_steps"], metrics[f"{split}_loss"], label=LABELS[split])
    axis.set(yscale="log", xlabel="inner steps", ylabel="loss (no penalty)")
    axis.legend()
    return _save(figure, path)


def plot_hyperparameters(metrics: pd.DataFrame, path: Path) -> Path:
    """Mean and range of the constrained hyperparameter values over outer steps."""
    figure, axis = plt.subplots(figsize=(6, 4))
    steps = metrics["outer_step"]
    axis.plot(steps, metrics["hyper_mean"], label="mean")
    axis.fill_between(steps, metrics["hyper_min"], metrics["hyper_max"], alpha=0.3, label="range")
    axis.set(yscale="log", xlabel="outer step", ylabel="hyperparameter value")
    axis.legend()
    return _save(figure, path)


def plot_solver(metrics: pd.DataFrame, path: Path) -> Path:
    """Hypergradient norm and the inverse-HVP residual over outer steps."""
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    steps = metrics["outer_step"]
    top.plot(steps, metrics["hypergrad_norm"], marker=".")
    top.set(yscale="log", ylabel="‖dL_v/dλ‖")
    bottom.plot(steps, metrics["solver_residual"], marker=".")
    bottom.set(yscale="log", xlabel="outer step", ylabel="‖Hx − b‖ / ‖b‖")
    return _save(figure, path)


PLOTS = {
    "errors.png": plot_errors,
    "losses.png": plot_losses,
    "hyperparameters.png": plot_hyperparameters,
    "solver.png": plot_solver,
}


def plot_run(run_dir: Path) -> list[Path]:
    """Draw every plot of :data:`PLOTS` from ``run_dir/metrics.csv`` into ``run_dir``."""
    metrics = pd.read_csv(run_dir / "metrics.csv")
    return [plot(metrics, run_dir / name) for name, plot in PLOTS.items()]


def main() -> None:
    for run_dir in sys.argv[1:]:
        for path in plot_run(Path(run_dir)):
            print(path)


if __name__ == "__main__":
    main()
