"""Gradient-based HPO against Optuna's black-box search (TPE, random) at equal training budgets.

python -m experiments.optuna_baseline [--out outputs/optuna_baseline] [--seeds 0 1 2] [--long]

Needs the cluster extra (``pip install -e ".[cluster]"``) for the Optuna sweeper. For each seed
(which also draws the 50/50 training/validation split of digits) it runs, reusing whatever has
completed in ``--out`` already:

* the gradient-based runs, ``outer_steps × inner_steps`` = B inner steps plus one hyper-step per
  outer step: per-weight decay (``hpo-run``, the default experiment) and one scalar decay
  (``hpo-run hyper=weight_decay``);
* Optuna's TPE and random search over the scalar decay and Adam's learning rate
  (``hydra/sweeper=optuna_tpe|optuna_random``, ``experiment=optuna_baseline``), ``--trials`` T
  trials of B / T inner steps each: the same B inner steps in total, without hyper-steps;
* with ``--long``, the same searches with B inner steps per trial (T times the budget).

Each search's result is its best trial by final validation loss, the objective every method
minimises. Everything is read back from ``summary.json`` files, and the table goes to
``<out>/optuna_baseline.csv`` and ``<out>/optuna_baseline.md``.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from experiments.common import read_summary
from hpo_cli.runner.sweeps.aggregate import job_dirs

HPO_RUN = str(Path(sys.executable).parent / "hpo-run")
QUIET = ["progress=false", "plots=false"]


@dataclass(frozen=True)
class Method:
    """One row of the table: a gradient-based run or an Optuna search (``sweeper`` set)."""

    name: str
    folder: str
    overrides: list[str] = field(default_factory=list)
    sweeper: str | None = None
    long: bool = False  # a search whose every trial gets the whole budget B


def methods(long: bool) -> list[Method]:
    """The rows: two gradient-based runs, two searches at the same budget, optionally two more
    with T times the budget."""
    rows = [
        Method("gradient-based, per-weight decay", "ift_per_weight"),
        Method("gradient-based, scalar decay", "ift_scalar", ["hyper=weight_decay"]),
        Method("Optuna TPE", "optuna_tpe", sweeper="optuna_tpe"),
        Method("Optuna random search", "optuna_random", sweeper="optuna_random"),
    ]
    if long:
        rows += [
            Method(f"{row.name}, T× budget", f"{row.folder}_long", [], row.sweeper, long=True)
            for row in rows[2:]
        ]
    return rows


def steps_overrides(method: Method, outer: int, inner: int, trials: int) -> list[str]:
    """``outer_steps``/``inner_steps`` of a run, or of each trial of a search: B / T inner steps,
    or the whole B for a ``long`` search.

    Raises:
        ValueError: B / T is not a whole number of outer steps of ``inner`` inner steps.
    """
    if method.sweeper is None or method.long:
        return [f"outer_steps={outer}", f"inner_steps={inner}"]
    if outer % trials:
        raise ValueError(
            f"--trials {trials} must divide --outer-steps {outer}: each trial gets "
            f"{outer} / {trials} outer steps of {inner} inner steps"
        )
    return [f"outer_steps={outer // trials}", f"inner_steps={inner}"]


def ensure(method: Method, folder: Path, overrides: list[str], trials: int) -> Path:
    """Run ``method`` into ``folder`` unless it has completed there already."""
    if method.sweeper is None:
        summary = folder / "summary.json"
        if summary.exists() and read_summary(folder)["status"] == "completed":
            return folder
        command = [HPO_RUN, *method.overrides, *overrides, *QUIET, f"hydra.run.dir={folder}"]
        subprocess.run(command, check=True)
        return folder
    if (folder / "optimization_results.yaml").exists():
        return folder
    command = [
        HPO_RUN, "-m", "experiment=optuna_baseline", f"hydra/sweeper={method.sweeper}",
        f"hydra.sweeper.n_trials={trials}", *method.overrides, *overrides, *QUIET,
        f"hydra.sweep.dir={folder}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if not (folder / "optimization_results.yaml").exists():
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    if result.returncode:  # some trials failed: the sweep names them, the search goes on
        print(result.stderr.strip(), file=sys.stderr)
    return folder


def run_result(run_dir: Path) -> dict[str, Any]:
    """Final errors, inner steps and training time of one gradient-based run."""
    summary = read_summary(run_dir)
    final = summary["final"]
    return {
        "val_loss": final["val_loss"],
        "val_error": final["val_error"],
        "test_error": final["test_error"],
        "total_inner_steps": summary["total_inner_steps"],
        "hyper_steps": summary["outer_steps"],
        "trials": 1,
        "time_s": summary["time_s"]["total"],
        "best_params": "",
    }


def search_result(sweep_dir: Path) -> dict[str, Any]:
    """The best completed trial of a search by final validation loss; inner steps and training
    time summed over all trials."""
    trials = [read_summary(job) | {"dir": job} for job in job_dirs(sweep_dir)]
    completed = [t for t in trials if t["status"] == "completed"]
    best = min(completed, key=lambda t: t["final"]["val_loss"])
    reported = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    if not math.isclose(reported.best_value, best["final"]["val_loss"], rel_tol=1e-6):
        raise ValueError(f"{sweep_dir}: Optuna's best value is not the best trial's loss")
    params = " ".join(o for o in best["overrides"] if o.startswith(("hyper.init", "optimizer.lr")))
    return {
        "val_loss": best["final"]["val_loss"],
        "val_error": best["final"]["val_error"],
        "test_error": best["final"]["test_error"],
        "total_inner_steps": sum(t["total_inner_steps"] or 0 for t in trials),
        "hyper_steps": 0,
        "trials": len(trials),
        "time_s": sum(t["time_s"]["total"] for t in trials if t["time_s"]),
        "best_params": params,
    }


def measure(
    out: Path, seeds: list[int], trials: int, outer: int, inner: int, long: bool
) -> pd.DataFrame:
    """Run (or reuse) every method for every seed; one row per (method, seed).

    Raises:
        ValueError: the budget does not split into ``trials`` trials (before anything runs).
    """
    plan = [(method, steps_overrides(method, outer, inner, trials)) for method in methods(long)]
    rows = []
    for method, steps in plan:
        for seed in seeds:
            folder = out / method.folder / f"seed_{seed}"
            ensure(method, folder, [f"seed={seed}", *steps], trials)
            result = run_result(folder) if method.sweeper is None else search_result(folder)
            rows.append({"method": method.name, "seed": seed, **result})
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """Per method: inner steps (and hyper-steps) per seed, val and test error per seed, their
    mean, and the training time per seed."""
    seeds = " / ".join(str(s) for s in table["seed"].unique())
    lines = [
        f"| method (seeds {seeds}) | inner steps per seed | val error | test error "
        "| mean test error | training time per seed |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, rows in table.groupby("method", sort=False):
        steps = int(rows["total_inner_steps"].iloc[0])
        hyper = int(rows["hyper_steps"].iloc[0])
        trials = int(rows["trials"].iloc[0])
        budget = f"{steps:,}" + (f" + {hyper} hyper-steps" if hyper else f" ({trials} trials)")
        val = " / ".join(f"{v:.3f}" for v in rows["val_error"])
        test = " / ".join(f"{v:.3f}" for v in rows["test_error"])
        time = f"{rows['time_s'].mean():.1f} s"
        lines.append(
            f"| {name} | {budget} | {val} | {test} | {rows['test_error'].mean():.3f} | {time} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Command line: measure, write the CSV and Markdown tables, print the latter."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/optuna_baseline"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=20, help="trials per search (T)")
    parser.add_argument("--outer-steps", type=int, default=200, help="of the gradient-based runs")
    parser.add_argument("--inner-steps", type=int, default=50)
    parser.add_argument("--long", action="store_true", help="also searches with B steps a trial")
    args = parser.parse_args(argv)
    try:
        table = measure(
            args.out, args.seeds, args.trials, args.outer_steps, args.inner_steps, args.long
        )
    except ValueError as error:
        parser.error(str(error))
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "optuna_baseline.csv", index=False)
    text = markdown(table)
    (args.out / "optuna_baseline.md").write_text(text)
    print(text, end="")
    return table


if __name__ == "__main__":
    main()
