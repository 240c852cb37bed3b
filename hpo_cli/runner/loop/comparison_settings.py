"""The ``solver_comparison`` block of ``hpo-run``'s configuration (:class:`SolverComparisonConfig`),
apart from :mod:`hpo_cli.runner.loop.experiment`, so that the configuration's schema imports no
torch."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SolverComparisonConfig:
    """Every ``every`` outer steps and at the last one, the hypergradients of ``solvers`` at
    budgets K = 0..``budget`` against a dense solve (:mod:`hpo_cli.analysis.solver_comparison`),
    on the first ``hyper_train_batch``/``hyper_val_batch`` examples, into
    ``solver_comparison.csv``."""

    every: int | None = None  # outer steps between comparisons; None: off
    solvers: list[str] = field(default_factory=lambda: ["identity", "neumann", "cg"])
    budget: int = 50  # the largest K: Neumann terms, CG steps
    neumann_alpha: float | None = None  # Neumann's fixed step; None: 1/λmax of the dense H
    horizons: list[int] = field(default_factory=list)  # inner phases of the unrolled references
    directions: int = 8  # random directions of λ for the finite-difference check
    fd_eps: float = 1e-4  # central-difference step along each unit direction
