"""Solver defaults chosen by evidence: CG and the Neumann series out of the box and with each
candidate default, on every built-in (model, hyperparameter module) pair that trains on a CPU.

python -m experiments.solver_defaults STUDY_DIR [OUT_DIR] [--full]

Every cell is one ``hpo-run`` of the default experiment (50 training and 50 validation digits,
Adam inside, RMSprop outside, ``threads=1``) with ``model=M hyper=H``, one candidate's solver
overrides and the quality probe on (``quality_every``: the cosine of each hyper-step's
hypergradient with the unrolled hypergradient through the next inner phase of the real
training). It is run in this process into
``STUDY_DIR/<scale>/<candidate>/<model>-<hyper>/<seed>`` (scale: ``small`` or ``full``); a
cell whose ``summary.json`` is there already (completed, failed or refused) is read, not run
again. ResNet-18 is left out (seconds per inner step on a CPU); a pair the runner refuses
(dropout without hidden activations) is listed as such.

What a cell gives (its ``summary.json``): the hyper-steps by solver status, the doubtful ones
(:mod:`hpo_cli.runner.loop.solver_health`: diverged, negative curvature, unstable, or a residual
‖Ax − b‖/‖b‖ above 1), the median residual and the probe's median cosine. Writes
``STUDY_DIR/solver_defaults.csv`` (one row per cell) and ``solver_defaults.md`` (one row per
candidate, over every cell that ran), and with ``OUT_DIR`` the figure ``solver_defaults.png``
(the median cosine of every candidate on every pair).

Small by default (10 outer steps, a probe every 5, seed 0: 224 cells, about 8 minutes of one
core's CPU time); ``--full``: 30 outer steps, a probe every 5, seeds 0, 1 and 2 (about 9 times
as much).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import torch
from hydra import compose, initialize_config_module

from experiments.common import read_summary, save
from hpo_cli.runner.cli.command import execute
from hpo_cli.runner.config.schemas import register_configs
from hpo_cli.runner.rundir.directory import RunDirectory

EXPERIMENT = "solver_defaults"
FILES = (f"{EXPERIMENT}.csv", f"{EXPERIMENT}.md")
MODELS = ("linear", "mlp", "lenet", "two_layer_linear")
"""conf/model without resnet18 (seconds per inner step on a CPU)."""
HYPERS = (
    "weight_decay",
    "weight_decay_per_layer",
    "weight_decay_per_weight",
    "dropout",
    "loss_weights",
    "augment_net",
    "distill",
)
"""Every option of conf/hyper."""
QUIET = ["plots=false", "progress=false", "threads=1"]


@dataclass(frozen=True)
class Candidate:
    """A solver setting: its name in the table and its ``hpo-run`` overrides."""

    name: str
    overrides: tuple[str, ...]


CANDIDATES = (
    Candidate("cg", ("solver=cg", "solver.curvature=hessian", "solver.damping=0.0")),
    Candidate("cg damping=0.1", ("solver=cg", "solver.curvature=hessian", "solver.damping=0.1")),
    Candidate("cg damping=1", ("solver=cg", "solver.curvature=hessian", "solver.damping=1.0")),
    Candidate("cg ggn", ("solver=cg", "solver.curvature=ggn", "solver.damping=0.0")),
    Candidate("cg ggn damping=0.1", ("solver=cg", "solver.curvature=ggn", "solver.damping=0.1")),
    Candidate("neumann", ("solver=neumann", "solver.alpha=auto", "solver.terms=4")),
    Candidate("neumann terms=10", ("solver=neumann", "solver.alpha=auto", "solver.terms=10")),
    Candidate("neumann alpha=0.05", ("solver=neumann", "solver.alpha=0.05", "solver.terms=4")),
)
"""The settings compared. Every one spells out the keys any candidate changes, so that a cell
measures its setting whatever the YAML defaults of the day are."""


@dataclass(frozen=True)
class Scale:
    """How long each cell trains, how often it is probed, which seeds, and any other overrides
    (the tests' tiny data); ``name`` is the cells' folder, so that no scale reuses another's."""

    name: str
    outer_steps: int
    quality_every: int
    seeds: tuple[int, ...]
    extra: tuple[str, ...] = ()

    def overrides(self) -> list[str]:
        steps = [f"outer_steps={self.outer_steps}", f"quality_every={self.quality_every}"]
        return [*steps, *self.extra]


SMALL = Scale("small", outer_steps=10, quality_every=5, seeds=(0,))
FULL = Scale("full", outer_steps=30, quality_every=5, seeds=(0, 1, 2))


def cell_dir(
    study_dir: Path, scale: Scale, candidate: Candidate, model: str, hyper: str, seed: int
) -> Path:
    name = candidate.name.replace(" ", "_")
    return study_dir / scale.name / name / f"{model}-{hyper}" / str(seed)


def run_cell(run_dir: Path, overrides: list[str]) -> None:
    """``hpo-run`` with ``overrides`` into ``run_dir``, in this process, as one job of a multirun
    does: a refused or failed run leaves its ``summary.json`` with the error, and no exception."""
    register_configs()
    with initialize_config_module("hpo_cli.conf", version_base="1.3"):
        cfg = compose("config", overrides)
    run_dir.mkdir(parents=True, exist_ok=True)
    execute(cfg, run_dir, overrides, multirun=True)


def cell_row(run_dir: Path) -> dict[str, Any]:
    """A cell's numbers from its ``summary.json``."""
    summary = read_summary(run_dir)
    solves = summary.get("solves") or {}
    cosine = summary.get("hypergrad_cosine") or {}
    statuses = solves.get("statuses", {})
    return {
        "status": summary["status"],
        "refused": summary.get("outer_steps") is None,  # stopped before training
        "error": (summary.get("error") or "").split("\n")[0],
        "health": summary.get("solver_health"),
        "hyper_steps": solves.get("hyper_steps", 0),
        "doubtful": sum(solves.get("doubtful", {}).values()),
        "statuses": ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())),
        "median_residual": (solves.get("residual") or {}).get("median", math.nan),
        "median_cosine": cosine.get("median_cosine", math.nan),
        "test_error": (summary.get("final") or {}).get("test_error", math.nan),
    }


def run_study(study_dir: Path, full: bool = False) -> pd.DataFrame:
    """Run (or read back) every cell; write ``solver_defaults.csv`` and ``.md``; return the
    cells' table."""
    scale = FULL if full else SMALL
    study_dir.mkdir(parents=True, exist_ok=True)
    quiet, level = logging.getLogger("hpo_cli"), logging.getLogger("hpo_cli").level
    quiet.setLevel(logging.WARNING)  # 224 runs' progress lines: the study's table says it all
    try:
        rows = cells(study_dir, scale)
    finally:
        quiet.setLevel(level)
    table = pd.DataFrame(rows)
    table.to_csv(study_dir / FILES[0], index=False)
    (study_dir / FILES[1]).write_text(markdown(table, scale))
    return table


def cells(study_dir: Path, scale: Scale) -> list[dict[str, object]]:
    """Every cell's row, each run here first unless its summary.json is there."""
    rows = []
    for candidate in CANDIDATES:
        for model in MODELS:
            for hyper in HYPERS:
                for seed in scale.seeds:
                    run_dir = cell_dir(study_dir, scale, candidate, model, hyper, seed)
                    if not RunDirectory(run_dir).summary.exists():
                        overrides = [
                            f"model={model}", f"hyper={hyper}", *candidate.overrides,
                            *scale.overrides(), f"seed={seed}", *QUIET,
                        ]  # fmt: skip
                        run_cell(run_dir, overrides)
                    row = {"candidate": candidate.name, "model": model, "hyper": hyper}
                    rows.append({**row, "seed": seed, **cell_row(run_dir)})
    return rows


def refused(table: pd.DataFrame) -> list[str]:
    """The (model, hyper) pairs the runner refused, with the first words of its reason."""
    pairs = table[table["refused"]].drop_duplicates(["model", "hyper"])
    return [f"{r.model} × {r.hyper} ({r.error.split(':')[0]})" for r in pairs.itertuples()]


def candidate_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per candidate over the cells that trained: runs, runs that failed (a diverged
    solve stops a run), completed runs whose health is ``ok``, doubtful hyper-steps of all, the
    median over cells of the median residual and of the median cosine, and the cells whose
    median cosine is below 0.1 (or missing: a run that failed before its first probe)."""
    trained = table[~table["refused"]]
    out = []
    for name, cells in trained.groupby("candidate", sort=False):
        cosine = cells["median_cosine"].dropna()
        completed = cells["status"] == "completed"
        out.append(
            {
                "candidate": name,
                "runs": len(cells),
                "failed": int((cells["status"] != "completed").sum()),
                "health ok": int(((cells["health"] == "ok") & completed).sum()),
                "doubtful hyper-steps": f"{int(cells['doubtful'].sum())} of "
                f"{int(cells['hyper_steps'].sum())}",
                "median residual": statistics.median(cells["median_residual"].dropna()),
                "median cosine": statistics.median(cosine) if len(cosine) else math.nan,
                "cosine < 0.1": int((~(cells["median_cosine"] >= 0.1)).sum()),
            }
        )
    return pd.DataFrame(out)


def markdown(table: pd.DataFrame, scale: Scale) -> str:
    """The candidates' table with the scale, the machine and torch's version."""
    summary = candidate_summary(table)
    lines = [
        f"{scale.outer_steps} outer steps, a probe every {scale.quality_every}, seeds "
        f"{', '.join(map(str, scale.seeds))}; {len(MODELS)} models × {len(HYPERS)} hyperparameter "
        f"modules on digits; torch {torch.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} cores, threads=1. Refused: {'; '.join(refused(table)) or 'none'}.",
        "",
        "| " + " | ".join(summary.columns) + " |",
        "| " + " | ".join("---" for _ in summary.columns) + " |",
    ]
    for row in summary.itertuples(index=False):
        cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def grid(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The figure's two tables over the cells that trained, candidates (rows, in
    :data:`CANDIDATES`' order) by pairs (columns, ``model × hyper``): the median cosine (mean
    over seeds; NaN for a run that failed before its first probe) and whether any seed's run
    was doubtful or failed."""
    trained = table[~table["refused"]].assign(
        pair=lambda t: t["model"] + " × " + t["hyper"],
        bad=lambda t: (t["health"] == "doubtful") | (t["status"] != "completed"),
    )
    order = [c.name for c in CANDIDATES if c.name in set(trained["candidate"])]
    pairs = sorted(set(trained["pair"]))
    cosine = trained.pivot_table("median_cosine", "candidate", "pair", "mean", dropna=False)
    bad = trained.pivot_table("bad", "candidate", "pair", "max", dropna=False)
    return cosine.reindex(index=order, columns=pairs), bad.reindex(index=order, columns=pairs)


def plot(study_dir: Path, out_dir: Path) -> list[Path]:
    """Median probe cosine of every candidate (rows) on every pair (columns), seeds averaged;
    a doubtful or failed run's cell is marked with a cross."""
    cosine, bad = grid(pd.read_csv(study_dir / FILES[0]))
    figure, axis = plt.subplots(figsize=(0.42 * cosine.shape[1] + 3, 0.4 * len(cosine) + 2.5))
    image = axis.imshow(cosine.to_numpy(float), cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    for i, j in zip(*bad.to_numpy(bool).nonzero(), strict=True):
        axis.text(j, i, "×", ha="center", va="center", fontsize=8)
    axis.set_xticks(range(cosine.shape[1]), cosine.columns, rotation=90, fontsize=7)
    axis.set_yticks(range(len(cosine)), cosine.index, fontsize=8)
    figure.colorbar(image, label="median probe cosine")
    axis.set_title("Solver candidates on every (model, hyper) pair (×: doubtful or failed)")
    return save(figure, out_dir, EXPERIMENT)


def describe(study_dir: Path) -> str:
    """The candidates' table (``solver_defaults.md``), for REPORT.md."""
    return "\n\n" + (study_dir / FILES[1]).read_text()


CAPTION = (
    "CG and the Neumann series out of the box and with each candidate default, on every "
    "built-in (model, hyperparameter module) pair on digits: the median cosine of the run's "
    "hypergradient with the unrolled hypergradient through the next inner phase (the quality "
    "probe), and the runs whose solver health is doubtful."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("out_dir", type=Path, nargs="?")
    parser.add_argument("--full", action="store_true", help="30 outer steps, seeds 0, 1, 2")
    arguments = parser.parse_args()
    run_study(arguments.study_dir, arguments.full)
    print(arguments.study_dir / FILES[1])
    if arguments.out_dir is not None:
        print(*plot(arguments.study_dir, arguments.out_dir), sep="\n")


if __name__ == "__main__":
    main()
