"""Training, validation and test error against inner steps (seed 001 / Lorraine et al. §5.1).

python -m experiments.overfit_validation <run dir> <out dir>
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from experiments.common import read_metrics, save, script_main

SPLITS = {"train": "training", "val": "validation", "test": "test"}
CAPTION = (
    "Per-weight decay tuned on 50 validation digits: the validation error falls to zero while "
    "the test error stays well above it, i.e. the hyperparameters overfit the validation set."
)


def plot(run_dir: Path, out_dir: Path) -> list[Path]:
    """Error of each split (from ``metrics.csv``) against inner steps, log x."""
    metrics = read_metrics(run_dir)
    figure, axis = plt.subplots(figsize=(6, 4))
    for split, label in SPLITS.items():
        axis.plot(
            metrics["total_inner_steps"].clip(lower=1), metrics[f"{split}_error"], label=label
        )
    axis.set(xscale="log", xlabel="inner steps", ylabel="classification error", ylim=(0, None))
    axis.set_title("Overfitting the validation set")
    axis.legend()
    return save(figure, out_dir, "overfit_validation")


if __name__ == "__main__":
    script_main(plot, "overfit_validation")
