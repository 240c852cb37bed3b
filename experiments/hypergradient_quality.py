"""Which hypergradient predicts what the training does, over which horizon: quality against cost.

Drawn from the ``solver_comparison.csv`` of a ``hypergradient_quality`` run (``hpo-run
experiment=hypergradient_quality``, or ``experiment=hypergradient_quality_ridge``; any run with
``solver_comparison.horizons`` will do). One column per compared outer step (early, middle,
late). Top row: cosine similarity with the dense IFT solve against the number of
Hessian-vector products, one line per solver family (identity, Neumann with K terms, CG with K
steps on H, CG on the Gauss-Newton matrix, K unrolled inner-optimiser steps, the first-order
hypergradient with the inner optimiser's preconditioner). Then one row per
horizon h: the correlation of each solver's predicted change of the validation loss ⟨g, d_i⟩ with
the real training's change over the next h inner steps (central differences along random
directions d_i); a thin grey line at the unrolled reference's own correlation (≈ 1: the
reference is validated). The second figure puts the late step's cosine against each reference
over wall-clock seconds.

python -m experiments.hypergradient_quality <run dir> <out dir>
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from experiments.common import RUN_FILES, save, script_main

EXPERIMENT = "hypergradient_quality"
FILES = (*RUN_FILES, "solver_comparison.csv")
CAPTION = (
    "Per-weight decay on a digits MLP (Adam inside, float64): every solver's hypergradient "
    "against the dense IFT solve (top row: cosine) and against what the real Adam training does "
    "over the next 1, 5 and 20 inner phases (1 and 5 in the small build; lower rows: "
    "correlation of predicted and measured changes of the validation loss along random "
    "directions of λ), against Hessian-vector products, at early, middle and late outer steps "
    "(15 and 30 in the small build)."
)
RIDGE_CAPTION = CAPTION.replace(
    "Per-weight decay on a digits MLP", "Ridge regression on diabetes (closed-form minimiser)"
)
FAMILIES = {
    "identity": ("identity", "C2"),
    "neumann": ("Neumann", "C0"),
    "cg": ("CG (H)", "C1"),
    "ggn_cg": ("CG (Gauss-Newton)", "C3"),
    "unrolled": ("unrolled", "C4"),
    "first_order": ("first-order (SAMA)", "C5"),
    "exact": ("dense solve", "k"),
}


def read_comparison(run_dir: Path) -> pd.DataFrame:
    """The run's ``solver_comparison.csv`` (columns: :class:`SolverComparison`)."""
    return pd.read_csv(run_dir / "solver_comparison.csv")


def _lines(axis: plt.Axes, rows: pd.DataFrame, column: str, x: str = "hvps") -> None:
    for name, (label, color) in FAMILIES.items():
        group = rows[rows["solver"] == name].sort_values("k")  # in order of budget
        if group.empty:
            continue
        if name in ("identity", "first_order", "exact") and x == "hvps":
            axis.axhline(group[column].iloc[0], color=color, linestyle="--", label=label)
        else:
            axis.plot(group[x], group[column], color=color, marker=".", label=label)


def plot(run_dir: Path, out_dir: Path) -> list[Path]:
    """Quality against products (one figure) and against seconds (another)."""
    table = read_comparison(run_dir)
    steps = sorted(table["outer_step"].unique())
    horizons = sorted(h for h in table["horizon"].unique() if h > 0)
    rows = 1 + len(horizons)
    figure, axes = plt.subplots(
        rows, len(steps), figsize=(4.2 * len(steps), 3.2 * rows), squeeze=False, sharex=True
    )
    for column, step in enumerate(steps):
        at_step = table[table["outer_step"] == step]
        dense = at_step[at_step["reference"] == "dense"]
        axis = axes[0, column]
        _lines(axis, dense, "cosine")
        axis.set(title=f"outer step {step}", ylim=(-1.05, 1.05))
        for row, horizon in enumerate(horizons, start=1):
            against = at_step[
                (at_step["reference"] == "unrolled") & (at_step["horizon"] == horizon)
            ]
            axis = axes[row, column]
            _lines(axis, against, "fd_correlation")
            own = against.loc[against["solver"] == "reference", "fd_correlation"]
            if not own.empty:
                axis.axhline(own.iloc[0], color="0.6", linewidth=0.8)
            axis.axhline(0.0, color="0.85", linewidth=0.8)
            axis.set(ylim=(-1.05, 1.05))
        axes[-1, column].set_xlabel("Hessian-vector products (K)")
    axes[0, 0].set_ylabel("cosine with dense IFT")
    for row, horizon in enumerate(horizons, start=1):
        axes[row, 0].set_ylabel(f"corr. with real training,\nnext {horizon} inner steps")
    axes[0, 0].legend(fontsize=7)
    figure.suptitle(f"Hypergradient quality against cost ({run_dir.name})")
    paths = save(figure, out_dir, run_dir.name if run_dir.name != "." else EXPERIMENT)

    late = table[table["outer_step"] == steps[-1]]
    references = [("dense", 0), *(("unrolled", h) for h in horizons)]
    figure, axes = plt.subplots(1, len(references), figsize=(4.2 * len(references), 3.4))
    for axis, (reference, horizon) in zip(axes, references, strict=True):
        rows_at = late[(late["reference"] == reference) & (late["horizon"] == horizon)]
        _lines(axis, rows_at[rows_at["solver"] != "reference"], "cosine", x="time_s")
        what = "dense IFT" if reference == "dense" else f"unrolled, {horizon} steps"
        axis.set(xscale="log", xlabel="seconds", title=f"cosine with {what}", ylim=(-1.05, 1.05))
    axes[0].legend(fontsize=7)
    figure.suptitle(f"Quality against time at outer step {steps[-1]}")
    return paths + save(figure, out_dir, f"{run_dir.name}_time")


def describe(run_dir: Path) -> str:
    """The late step's numbers: each family's best correlation with the real training per
    horizon, and the unrolled reference's agreement with the finite differences."""
    table = read_comparison(run_dir)
    late = table[table["outer_step"] == table["outer_step"].max()]
    parts = []
    for horizon, rows in late[late["reference"] == "unrolled"].groupby("horizon"):
        own = rows[rows["solver"] == "reference"].iloc[0]
        best = rows[rows["solver"] != "reference"].groupby("solver")["fd_correlation"].max()
        listed = ", ".join(f"{FAMILIES[s][0]} {v:+.2f}" for s, v in best.items() if s in FAMILIES)
        parts.append(
            f"over {horizon} inner steps the unrolled reference matches the finite differences "
            f"(correlation {own['fd_correlation']:.4f}, relative error {own['rel_error']:.1e}); "
            f"best correlation per family: {listed}"
        )
    step = int(late["outer_step"].iloc[0])
    return f" At outer step {step}: " + "; ".join(parts) + "." if parts else ""


if __name__ == "__main__":
    script_main(plot, EXPERIMENT, FILES)
