"""The tiny runs of hpo-run that the tests make: the one list of their overrides (:data:`TINY`, its
parts and its few variants), and tiny in-process runs for the tracking, early-stopping and report
tests through :func:`hpo_cli.runner.cli.command.execute` as Hydra calls it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from omegaconf import DictConfig

from hpo_cli.runner.cli import command as cli
from hpo_cli.runner.loop import train as loop
from tests.support.composed import run_config

DATA = [
    "dataset.train_size=20",
    "dataset.val_size=20",
    "dataset.test_size=40",
    "batch_size=8",
]
"""What a tiny run trains on: 20 training and 20 validation digits (40 to test), batches of 8
(the first three entries are the data set's sizes)."""

MODEL = ["model.hidden_sizes=[8]"]
"""The default MLP with one hidden layer of 8 units."""

QUIET = ["plots=false", "progress=false"]
"""No figures and no progress bar (the tests of either ask for them)."""

TINY = [
    "outer_steps=4",
    "inner_steps=5",
    "eval_every=1",
    "checkpoint_every=2",
    *DATA[:3],
    *MODEL,
    *DATA[3:],
    "warmup_inner_steps=50",
    *QUIET,
]
"""The tiny run of the default experiment, about a second: 4 outer steps of 5 inner steps on
:data:`DATA` with :data:`MODEL`, evaluated after every step, a checkpoint every 2 (the first four
entries are the steps)."""

# The variants, for the tests that need other sizes:
BRIEF = ["outer_steps=2", "inner_steps=3", "eval_every=1", *QUIET]
"""Steps only, 2 outer of 3 inner: for a data set, model or project that brings its own sizes."""

ONE_STEP = [
    "outer_steps=1",
    "inner_steps=2",
    "eval_every=1",
    "checkpoint_every=1",
    "batch_size=4",
    *QUIET,
]
"""One outer step of 2 inner steps, batches of 4: for every (dataset, model, hyper) combination,
ResNet-18 included, each with its own sizes."""


def tiny(*changes: str) -> list[str]:
    """:data:`TINY` with each ``key=value`` of ``changes`` in place of TINY's own value of that
    key (or after TINY's, for a key it does not set): no key twice on a command line."""
    new = dict(change.split("=", 1) for change in changes)
    kept = []
    for override in TINY:
        key = override.split("=", 1)[0]
        kept.append(f"{key}={new.pop(key)}" if key in new else override)
    return kept + [f"{key}={value}" for key, value in new.items()]


def config(*overrides: str) -> DictConfig:
    return run_config(*TINY, *overrides)


def run(run_dir: Path, *overrides: str, multirun: bool = False) -> float:
    """Run in ``run_dir`` as Hydra's task does (the run claims the folder: ``.hydra/``, the log)."""
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
