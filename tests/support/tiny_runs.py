"""Tiny in-process ``hpo-run`` runs for the tracking, early-stopping and report tests: a few
outer steps on 20 + 20 digits, through :func:`hpo_cli.runner.cli.command.execute` as Hydra calls
it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from omegaconf import DictConfig

from hpo_cli.runner.cli import command as cli
from hpo_cli.runner.loop import train as loop
from tests.support.composed import run_config

TINY = [
    "outer_steps=4",
    "inner_steps=5",
    "eval_every=1",
    "checkpoint_every=2",
    "dataset.train_size=20",
    "dataset.val_size=20",
    "dataset.test_size=40",
    "model.hidden_sizes=[8]",
    "batch_size=8",
    "warmup_inner_steps=50",
    "plots=false",
    "progress=false",
]


def config(*overrides: str) -> DictConfig:
    return run_config(*TINY, *overrides)


def run(run_dir: Path, *overrides: str, multirun: bool = False) -> float:
    """Run in ``run_dir`` as Hydra would (which makes the folder and its ``.hydra/``)."""
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    return cli.execute(config(*overrides), run_dir, list(overrides), multirun=multirun)


def metrics(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "metrics.csv")


def interrupt_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Raise KeyboardInterrupt (Ctrl-C) at the start of outer step ``step``."""
    real = loop.outer_step

    def outer_step(exp, progress, comparisons=None):
        if progress.outer_step + 1 == step:
            raise KeyboardInterrupt
        real(exp, progress, comparisons)

    monkeypatch.setattr(loop, "outer_step", outer_step)
