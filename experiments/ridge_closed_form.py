"""Learned per-weight decay against the closed-form optimum on seed 003's ridge regression.

For L_t = mean (x·w − y)² + Σ_i c_i w_i² the inner minimiser solves (A + diag c) w = b with
A = XᵀX/n, b = Xᵀy/n. L_v is smallest at the validation least-squares fit w_v, and w*(c) = w_v
exactly when c* = (b − A w_v) ⊘ w_v; when every c*_i > 0 it is the optimal penalty.

python -m experiments.ridge_closed_form <run dir> <out dir>
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch

from experiments.common import read_metrics, restore_run, save, script_main
from hpo_cli.data import Splits

CAPTION = (
    "Ridge regression with one decay per weight: the learned coefficients (solid) converge to "
    "the closed-form optimal penalty c* (dashed)."
)


def optimal_penalty(data: Splits) -> torch.Tensor:
    """c* (d,) for a bias-free linear model on ``data`` (inputs (n, d), targets (n,))."""
    inputs, targets = data.train.inputs, data.train.targets
    gram = inputs.T @ inputs / len(targets)
    moment = inputs.T @ targets / len(targets)
    val_fit = torch.linalg.lstsq(data.val.inputs, data.val.targets.unsqueeze(-1)).solution
    val_fit = val_fit.squeeze(-1)
    return (moment - gram @ val_fit) / val_fit


def plot(run_dir: Path, out_dir: Path) -> list[Path]:
    """The smallest and largest learned c per outer step (two weights: both of them) beside c*."""
    metrics = read_metrics(run_dir)
    exp = restore_run(run_dir)
    optimum = optimal_penalty(exp.data).tolist()
    figure, axis = plt.subplots(figsize=(6, 4))
    steps = metrics["outer_step"]
    axis.plot(steps, metrics["hyper_min"], color="C0", label="learned (smaller c)")
    axis.plot(steps, metrics["hyper_max"], color="C1", label="learned (larger c)")
    for value, color in zip(sorted(optimum), ("C0", "C1"), strict=False):
        axis.axhline(value, color=color, linestyle="--", label=f"closed form c* = {value:.3f}")
    axis.set(xlabel="outer step", ylabel="decay coefficient c")
    axis.set_title("Per-weight decay: learned vs optimal")
    axis.legend()
    return save(figure, out_dir, "ridge_closed_form")


if __name__ == "__main__":
    script_main(plot, "ridge_closed_form")
