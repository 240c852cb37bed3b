"""Inverse-Hessian-vector-product solvers: x ≈ A⁻¹ b from products v ↦ A v.

Each solver holds settings only: ``solver.solve(matvec, b, state) -> (x, SolveInfo, state)``
with the state passed in and returned, or ``solver(matvec, b) -> (x, SolveInfo)`` for one cold
solve; see :mod:`hpo_cli.core.solvers.base` for the contract.
"""

from hpo_cli.core.solvers.base import (
    InverseHVPSolver,
    SolveInfo,
    SolverState,
    StatelessSolver,
    Status,
)
from hpo_cli.core.solvers.cg import CGState, ConjugateGradient
from hpo_cli.core.solvers.exact import Exact, SingularSystemError
from hpo_cli.core.solvers.identity import Identity
from hpo_cli.core.solvers.lanczos_estimate import estimate_largest_eigenvalue, lanczos_extremes
from hpo_cli.core.solvers.neumann import Neumann, NeumannState

__all__ = [
    "CGState",
    "ConjugateGradient",
    "Exact",
    "Identity",
    "InverseHVPSolver",
    "Neumann",
    "NeumannState",
    "SingularSystemError",
    "SolveInfo",
    "SolverState",
    "StatelessSolver",
    "Status",
    "estimate_largest_eigenvalue",
    "lanczos_extremes",
]
