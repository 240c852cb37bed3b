"""Shared helpers of the figure scripts: checking, reading and restoring a run; saving figures."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from hpo_cli.runner.config.build import build_experiment
from hpo_cli.runner.loop.experiment import Experiment
from hpo_cli.runner.rundir.directory import RunDirectory

RUN_FILES = ("summary.json", "metrics.csv", ".hydra/config.yaml", "checkpoint.pt")
"""What a completed ``hpo-run`` leaves in its run directory (the figures read some of these)."""


class MissingRun(FileNotFoundError):
    """A run directory lacks what a figure is drawn from; the message names the command to run."""


def run_command(
    name: str, run_dir: Path, overrides: Sequence[str] = (), program: str = "hpo-run"
) -> str:
    """The command line that writes experiment ``name``'s run into ``run_dir``."""
    return " ".join([program, f"experiment={name}", *overrides, f"hydra.run.dir={run_dir}"])


def check_run(
    run_dir: Path,
    name: str,
    files: Sequence[str] = RUN_FILES,
    overrides: Sequence[str] = (),
    program: str = "hpo-run",
    command: str | None = None,
) -> None:
    """Raise :class:`MissingRun` (one line) unless ``run_dir`` holds ``files`` and, when one of
    them is ``summary.json``, its status is ``completed``.

    The message says what to run: ``command`` (by default the experiment's ``program``
    command) for a missing run, ``hpo-run resume=<run dir>`` for one that failed or was
    interrupted.
    """
    missing = [file for file in files if not (run_dir / file).exists()]
    if missing:
        raise MissingRun(
            f"{run_dir} holds no run of {name} (no {', '.join(missing)}); run: "
            f"{command or run_command(name, run_dir, overrides, program)}"
        )
    if "summary.json" in files:
        status = read_summary(run_dir)["status"]
        if status != "completed":
            raise MissingRun(
                f"the run of {name} in {run_dir} is {status}, not completed; continue it with: "
                f"hpo-run resume={run_dir} (or delete the folder and run: "
                f"{run_command(name, run_dir, overrides, program)})"
            )


def script_main(
    plot: Callable[[Path, Path], list[Path]],
    name: str,
    files: Sequence[str] = RUN_FILES,
    program: str = "hpo-run",
) -> None:
    """``python -m experiments.<name> RUN_DIR OUT_DIR``: draw one run's figure and print the
    paths; a missing or unfinished run is one line on stderr (exit code 1)."""
    if len(sys.argv) != 3:
        sys.exit(f"usage: python -m experiments.{name} RUN_DIR OUT_DIR")
    run_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    try:
        check_run(run_dir, name, files, program=program)
    except MissingRun as error:
        print(f"experiments.{name}: error: {error}", file=sys.stderr)
        sys.exit(1)
    print(*plot(run_dir, out_dir), sep="\n")


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
    return pd.read_csv(RunDirectory(run_dir).metrics)


def read_summary(run_dir: Path) -> dict[str, Any]:
    """The run's ``summary.json``."""
    return json.loads(RunDirectory(run_dir).summary.read_text())


def run_config(run_dir: Path) -> DictConfig:
    """The composed configuration Hydra saved in ``run_dir/.hydra/config.yaml``."""
    return OmegaConf.load(RunDirectory(run_dir).saved_config)


def restore_run(run_dir: Path) -> Experiment:
    """Rebuild the run's experiment (data, model, hyperparameters) and load the weights and
    hyperparameters of its last checkpoint; nothing is trained."""
    exp = build_experiment(run_config(run_dir))
    state = RunDirectory(run_dir).load_checkpoint()
    if state is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint.pt")
    exp.model.load_state_dict(state["model"])
    exp.hyper.load_state_dict(state["hyper"])
    return exp
