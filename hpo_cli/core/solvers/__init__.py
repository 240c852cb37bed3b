"""Inverse-Hessian-vector-product solvers: x ≈ A⁻¹ b from products v ↦ A v.

Each solver is a small callable ``solver(matvec, b) -> (x, SolveInfo)``; see
:mod:`hpo_cli.core.solvers.base` for the contract.
"""

from hpo_cli.core.solvers.base import InverseHVPSolver, SolveInfo, Status
from hpo_cli.core.solvers.cg import ConjugateGradient
from hpo_cli.core.solvers.exact import Exact, SingularSystemError
from hpo_cli.core.solvers.identity import Identity
from hpo_cli.core.solvers.lanczos_estimate import estimate_largest_eigenvalue, lanczos_extremes
from hpo_cli.core.solvers.neumann import Neumann

__all__ = [
    "ConjugateGradient",
    "Exact",
    "Identity",
    "InverseHVPSolver",
    "Neumann",
    "SingularSystemError",
    "SolveInfo",
    "Status",
    "estimate_largest_eigenvalue",
    "lanczos_extremes",
]
