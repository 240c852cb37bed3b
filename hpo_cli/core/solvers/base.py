"""The contract shared by every inverse-HVP solver.

A solver approximates x ≈ A⁻¹ b for a symmetric d×d matrix A that it only sees through a
``matvec`` callable v ↦ A v (a Hessian-vector product in practice). Vectors are lists of
tensors shaped like the model's parameters (:mod:`hpo_cli.core.vectors`).

    solver(matvec, b) -> (x, SolveInfo)

The solver does not know where the products come from; the caller does not know how the
solver iterates. Adding a solver means writing one such callable in its own file (inside
hpo-cli or in one's own package, named by ``solver._target_``; its constructor's keyword
arguments are the YAML's keys). It returns x as a list shaped like b and a :class:`SolveInfo`;
status ``diverged`` (or non-finite values in x) makes the caller apply its failure policy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol

import torch

from hpo_cli.core.hvp import MatVec
from hpo_cli.core.vectors import TensorList


class Status:
    """Why a solver stopped (the ``status`` field of :class:`SolveInfo`)."""

    CONVERGED = "converged"  # met its tolerance, or solved directly
    MAX_ITERATIONS = "max_iterations"  # used its whole budget of products
    APPROXIMATION = "approximation"  # a fixed approximation (identity), nothing to converge
    UNSTABLE = "unstable"  # Neumann: ρ(I − αA) >= 1 but the truncated sum has not blown up yet
    DIVERGED = "diverged"  # the iteration blew up; x is garbage
    NEGATIVE_CURVATURE = "negative_curvature"  # CG met pᵀAp ≤ 0 and stopped before dividing


@dataclass
class SolveInfo:
    """Diagnostics of one solve of A x = b.

    Attributes:
        solver: the solver's name.
        status: one of :class:`Status`.
        iterations: iterations performed (terms for Neumann, steps for CG).
        matvecs: products with A used, including any spent estimating a step size.
        residual: ‖A x − b‖ / ‖b‖ for the system the solver solved (damping included), when
            the solver knows it without extra products; otherwise ``None``.
        message: one human-readable line explaining the status.
        extras: solver-specific numbers (step α, λmax estimate, spectral radius, ...).
    """

    solver: str
    status: str
    iterations: int = 0
    matvecs: int = 0
    residual: float | None = None
    message: str = ""
    extras: dict[str, float] = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        return self.status == Status.CONVERGED

    @property
    def diverged(self) -> bool:
        return self.status == Status.DIVERGED

    def as_dict(self) -> dict[str, object]:
        """Flat, JSON-friendly view (for metrics files)."""
        info = asdict(self)
        info.update(converged=self.converged, diverged=self.diverged)
        return info


class InverseHVPSolver(Protocol):
    """Anything that maps (matvec, b) to an approximate solution of A x = b and its diagnostics."""

    def __call__(self, matvec: MatVec, b: TensorList) -> tuple[list[torch.Tensor], SolveInfo]: ...
