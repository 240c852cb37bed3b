"""The accuracy figure of ``benchmarks.hypergradient_cost``: relative error of every solver
against HVPs used and against time, from the rows of sections 3a and 3c."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib
import torch

from benchmarks.common.harness import Sizes, Table, log
from benchmarks.common.problems import mlp_widths

ERROR_FLOOR = 1e-17  # relative errors below this (an exact 0) are drawn at it on log axes


def plot_accuracy(
    problems: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: Path, device: torch.device
) -> None:
    """Relative error against HVPs used (left) and against time (right), log-log, one line per
    solver (identity and exact are single points), one row of panels per problem.

    Args:
        problems: (panel title, rows) pairs; each row has ``solver``, ``hvps``, ``median_ms``
            and ``rel_error`` (the rows of 3a and 3c, or the same columns read from the CSV).
        path: the PNG to write.
        device: named in the figure's title.
    """
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    families = ("identity", "neumann α =", "neumann α = auto", "cg", "cg μ", "exact")

    def colour(solver: str) -> str:
        """The same colour for a solver in every panel (a fixed α differs between problems)."""
        family = max((f for f in families if solver.startswith(f)), key=len, default="")
        return f"C{families.index(family) if family else len(families)}"

    figure, axes = plt.subplots(len(problems), 2, figsize=(11, 4.2 * len(problems)), squeeze=False)
    for row_axes, (title, table_rows) in zip(axes, problems, strict=True):
        by_solver: dict[str, list[dict[str, Any]]] = {}
        for row in table_rows:
            by_solver.setdefault(row["solver"], []).append(row)
        for ax, key, label in (
            (row_axes[0], "hvps", "HVPs per hypergradient (residual check included)"),
            (row_axes[1], "median_ms", "median time per hypergradient (ms)"),
        ):
            for solver, rows in by_solver.items():
                points = [(r[key], max(r["rel_error"], ERROR_FLOOR)) for r in rows]
                style = "o-" if len(points) > 1 else "s"
                ax.loglog(*zip(*points, strict=True), style, color=colour(solver), label=solver)
            ax.set_xlabel(label)
            ax.set_ylabel("relative error vs exact")
            ax.set_title(title, fontsize=10)
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on short ranges
            ax.grid(True, which="both", alpha=0.3)
        row_axes[0].legend(fontsize=8)
    figure.suptitle(f"hpo-cli: accuracy of one hypergradient per solver ({device.type})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def add_accuracy_figure(
    tables: Sequence[Table], sizes: Sizes, out: Path, stem: str, device: torch.device
) -> None:
    """Draw 3a's and 3c's rows to ``<out>/<stem>.png`` and link it from 3c's notes."""
    ridge, reduced = (next(t for t in tables if t.section == key) for key in ("3a", "3c"))
    path = out / f"{stem}.png"
    out.mkdir(parents=True, exist_ok=True)
    widths = mlp_widths(replace(sizes, inputs=sizes.reduced_inputs, hidden=sizes.reduced_hidden))
    plot_accuracy(
        [
            (f"3a. ridge regression, d = {sizes.ridge_dim}, float64 (vs closed form)", ridge.rows),
            (f"3c. MLP {widths}, float64 (vs exact)", reduced.rows),
        ],
        path,
        device,
    )
    reduced.notes.append(
        f"Relative error against HVPs and against time, 3a and 3c: `{path.name}` "
        f"![accuracy per solver]({path.name})"
    )
    log(f"wrote {path}")
