"""How well each inverse-HVP solver's hypergradient matches the exact one, against its budget.

Drawn from the ``solver_comparison.csv`` of an ``inverse_comparison`` run (``hpo-run
experiment=inverse_comparison``; any run with ``solver_comparison.every`` set will do): for
K = 0..budget Hessian-vector products, the cosine similarity and relative error against the
dense solve of Neumann with K terms and CG with K steps, the identity (no products) as a
constant. The last comparison of the run is drawn solid, earlier ones faint.

python -m experiments.inverse_comparison <run dir> <out dir>
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from experiments.common import RUN_FILES, save, script_main

EXPERIMENT = "inverse_comparison"
FILES = (*RUN_FILES, "solver_comparison.csv")
CAPTION = (
    "Hypergradient of per-weight decay on diabetes (linear model, float64) with the identity, "
    "Neumann with K terms (α = 1/λmax) and CG with K steps, against the dense solve: cosine "
    "similarity (left) and relative error (right) as the number K of Hessian-vector products "
    "grows; in exact arithmetic CG is exact from K = d, the number of weights, on."
)
STYLES = {"neumann": "C0", "cg": "C1", "identity": "C2"}
NAMES = {"neumann": "Neumann", "cg": "CG", "identity": "identity"}


def read_comparison(run_dir: Path) -> pd.DataFrame:
    """The run's ``solver_comparison.csv`` rows against the dense solve: outer_step, solver, k,
    hvps, cosine, rel_error, status (one row per solver and budget K at each compared step)."""
    table = pd.read_csv(run_dir / "solver_comparison.csv")
    return table[table["reference"] == "dense"] if "reference" in table else table


def plot(run_dir: Path, out_dir: Path) -> list[Path]:
    """Cosine similarity and relative error (log) against K, one line per solver."""
    table = read_comparison(run_dir)
    last_step = int(table["outer_step"].max())
    dimension = int(table.loc[table["solver"] == "exact", "k"].iloc[0])
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for step, at_step in table.groupby("outer_step"):
        last = step == last_step
        for name, group in at_step.groupby("solver", sort=False):
            if name == "exact":
                continue
            style = {"color": STYLES.get(name), "alpha": 1.0 if last else 0.3}
            style["label"] = NAMES.get(name, name) if last else None
            error = group["rel_error"].clip(lower=1e-17)
            if name == "identity":  # no products, no K: a constant
                left.axhline(group["cosine"].iloc[0], linestyle="--", **style)
                right.axhline(error.iloc[0], linestyle="--", **style)
            else:
                left.plot(group["k"], group["cosine"], linewidth=1.5 if last else 1, **style)
                right.plot(group["k"], error, linewidth=1.5 if last else 1, **style)
    for axis in (left, right):
        axis.axvline(dimension, color="0.5", linestyle=":", label=f"K = d = {dimension}")
        axis.set_xlabel("Hessian-vector products K (Neumann terms, CG steps)")
    left.set(ylabel="cosine similarity to the exact hypergradient", ylim=(None, 1.02))
    right.set(ylabel="relative error ‖g − g*‖ / ‖g*‖", yscale="log")
    steps = sorted(table["outer_step"].unique())
    label = "outer step" if len(steps) == 2 else "outer steps"
    earlier = f" (faint: {label} {', '.join(map(str, steps[:-1]))})" if len(steps) > 1 else ""
    figure.suptitle(f"Inverse-Hessian approximations at outer step {last_step}{earlier}")
    left.legend()
    return save(figure, out_dir, "inverse_comparison")


def describe(run_dir: Path) -> str:
    """One sentence of the last comparison's numbers (CG at K = d, Neumann and CG at the
    largest K, the identity)."""
    table = read_comparison(run_dir)
    last = table[table["outer_step"] == table["outer_step"].max()]
    error = last.set_index(["solver", "k"])["rel_error"]
    dimension = int(last.loc[last["solver"] == "exact", "k"].iloc[0])
    budget = int(last["k"][last["solver"] != "exact"].max())
    parts = []
    if ("cg", dimension) in error.index:
        parts.append(f"CG's relative error is {error['cg', dimension]:.2g} at K = d = {dimension}")
    for name in ("neumann", "cg"):
        if (name, budget) in error.index:
            parts.append(f"{NAMES[name]}'s {error[name, budget]:.2g} at K = {budget}")
    if ("identity", 0) in error.index:
        parts.append(f"the identity's {error['identity', 0]:.2g}")
    step = int(last["outer_step"].iloc[0])
    return f" At outer step {step}: {', '.join(parts)}." if parts else ""


if __name__ == "__main__":
    script_main(plot, EXPERIMENT, FILES)
