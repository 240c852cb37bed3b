"""Exact dense solve of (A + μI) x = b: the reference the other solvers are checked against.

The d×d matrix is assembled from d products with A (:func:`hpo_cli.core.hvp.dense_matrix`),
symmetrised as (A + Aᵀ)/2 to remove round-off, and solved directly. A singular A (an
over-parametrised network, a loss flat in some direction) has no inverse: use ``damping`` > 0
or ``method="pinv"``, the minimum-norm least-squares solution A⁺b with singular values below
``rtol``·σmax treated as zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hpo_cli.core.hvp import MatVec, damped, dense_matrix
from hpo_cli.core.solvers.base import SolveInfo, StatelessSolver, Status
from hpo_cli.core.vectors import TensorList, flatten, unflatten


class SingularSystemError(ValueError):
    """The dense system has no unique solution."""


@dataclass(frozen=True)
class Exact(StatelessSolver):
    """Dense direct solve; for models up to ``max_dim`` weights.

    Args:
        damping: μ ≥ 0 added to the diagonal.
        method: ``"solve"`` (LU, fails on a singular matrix) or ``"pinv"`` (pseudo-inverse).
        rtol: relative singular-value cut-off for ``"pinv"``; ``None`` uses PyTorch's default
            (d · machine epsilon).
        max_dim: refuse larger problems, whose d² memory and d products would be prohibitive.
    """

    damping: float = 0.0
    method: str = "solve"
    rtol: float | None = None
    max_dim: int = 10_000

    def __post_init__(self) -> None:
        if self.method not in ("solve", "pinv"):
            raise ValueError(f"exact.method must be 'solve' or 'pinv', got {self.method!r}")
        if self.damping < 0:
            raise ValueError(f"exact.damping must be >= 0, got {self.damping}")

    @staticmethod
    def max_residual(dtype: torch.dtype) -> float:
        """The largest relative residual a direct solve of a non-singular system leaves:
        √ε of the dtype (1.5e-8 in float64). A singular system leaves a residual of order 1."""
        return torch.finfo(dtype).eps ** 0.5

    def __call__(self, matvec: MatVec, b: TensorList) -> tuple[list[torch.Tensor], SolveInfo]:
        dim = sum(x.numel() for x in b)
        if dim > self.max_dim:
            raise ValueError(
                f"exact solver: {dim} weights exceed max_dim={self.max_dim}; use cg or neumann"
            )
        matrix = dense_matrix(damped(matvec, self.damping), b)
        matrix = 0.5 * (matrix + matrix.T)
        rhs = flatten(b)
        if self.method == "pinv":
            solution = torch.linalg.pinv(matrix, rtol=self.rtol, hermitian=True) @ rhs
        else:
            try:
                solution = torch.linalg.solve(matrix, rhs)
            except torch.linalg.LinAlgError as error:
                raise SingularSystemError(
                    "exact solver: the Hessian is singular; set damping > 0 or method='pinv'"
                ) from error
        rhs_norm = float(torch.linalg.vector_norm(rhs))
        residual = float(torch.linalg.vector_norm(matrix @ solution - rhs))
        relative_residual = residual / rhs_norm if rhs_norm > 0 else 0.0
        if self.method == "solve" and not relative_residual <= self.max_residual(rhs.dtype):
            raise SingularSystemError(
                f"exact solver: the Hessian is numerically singular (‖Ax − b‖/‖b‖ = "
                f"{relative_residual:.3g} after a direct solve); set damping > 0 or method='pinv'"
            )
        finite = bool(torch.isfinite(solution).all())
        info = SolveInfo(
            solver="exact",
            status=Status.CONVERGED if finite else Status.DIVERGED,
            iterations=1,
            matvecs=dim,
            residual=relative_residual,
            message=f"dense {self.method} of a {dim}×{dim} system",
            extras={"damping": self.damping},
        )
        return unflatten(solution, b), info
