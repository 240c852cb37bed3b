"""Shared helpers of the figure scripts: saving figures, reading and restoring a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from hpo_cli.checkpoint import load_checkpoint
from hpo_cli.training import Experiment, build_experiment


def save(figure: plt.Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write ``figure`` as ``out_dir/stem.png`` and ``out_dir/stem.pdf``; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    for path in paths:
        figure.savefig(path, dpi=120)
    plt.close(figure)
    return paths


def read_metrics(run_dir: Path) -> pd.DataFrame:
    """The run's ``metrics.csv``, one row per evaluation."""
    return pd.read_csv(run_dir / "metrics.csv")


def read_summary(run_dir: Path) -> dict[str, Any]:
    """The run's ``summary.json``."""
    return json.loads((run_dir / "summary.json").read_text())


def run_config(run_dir: Path) -> DictConfig:
    """The composed configuration Hydra saved in ``run_dir/.hydra/config.yaml``."""
    return OmegaConf.load(run_dir / ".hydra" / "config.yaml")


def restore_run(run_dir: Path) -> Experiment:
    """Rebuild the run's experiment (data, model, hyperparameters) and load the weights and
    hyperparameters of its last checkpoint; nothing is trained."""
    exp = build_experiment(run_config(run_dir))
    state = load_checkpoint(run_dir)
    if state is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint.pt")
    exp.model.load_state_dict(state["model"])
    exp.hyper.load_state_dict(state["hyper"])
    return exp
