"""Conjugate gradient for the damped system (A + μI) x = b (Hestenes & Stiefel, 1952).

CG needs A + μI symmetric positive definite. A training-loss Hessian need not be: when a search
direction p has pᵀ(A + μI)p ≤ 0 the step length would divide by a non-positive curvature, so
the solver stops there, keeps the iterate it has (the truncated-CG answer of Steihaug, 1983)
and reports ``negative_curvature``. Damping μ > 0 shifts the spectrum up by μ and is the usual
cure.

With a preconditioner M ≈ (A + μI) given as v ↦ M⁻¹v (symmetric positive definite), this is
preconditioned CG; in exact arithmetic it converges in at most d iterations, faster when the
(preconditioned) spectrum is clustered.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from hpo_cli.core.hvp import MatVec, damped
from hpo_cli.core.solvers.base import SolveInfo, Status
from hpo_cli.core.vectors import TensorList, add, add_, all_finite, clone, dot, norm, zeros_like

Preconditioner = Callable[[TensorList], list[torch.Tensor]]


@dataclass(frozen=True)
class ConjugateGradient:
    """Preconditioned conjugate gradient from x₀ = 0.

    Args:
        max_iter: the most iterations (one product with A each); 20 by default, a budget per
            hypergradient rather than a full solve (raise it, or use ``tol``, for one).
        tol: stop when ‖r‖ ≤ tol·‖b‖, r = b − (A + μI)x the recursively updated residual.
        damping: μ ≥ 0 added to the diagonal.
        preconditioner: optional v ↦ M⁻¹v; ``None`` for plain CG.
    """

    max_iter: int = 20
    tol: float = 1e-6
    damping: float = 0.0
    preconditioner: Preconditioner | None = None

    def __post_init__(self) -> None:
        if self.max_iter < 0:
            raise ValueError(f"cg.max_iter must be >= 0, got {self.max_iter}")
        if self.tol < 0:
            raise ValueError(f"cg.tol must be >= 0, got {self.tol}")
        if self.damping < 0:
            raise ValueError(f"cg.damping must be >= 0, got {self.damping}")

    def __call__(self, matvec: MatVec, b: TensorList) -> tuple[list[torch.Tensor], SolveInfo]:
        # The iterate x and residual r are updated in place: each iteration allocates the
        # product (A + μI) p and, once that is freed, the next direction (and z = M⁻¹r when
        # preconditioned). Without a
        # preconditioner z = r, so rᵀz = ‖r‖² is also the squared residual norm.
        matvec = damped(matvec, self.damping)
        solution = zeros_like(b)
        residual = clone(b)
        z = self.preconditioner(residual) if self.preconditioner else residual
        direction = clone(z)
        rz = float(dot(residual, z))
        b_norm = float(norm(b))
        extras = {"damping": self.damping}
        status, message = Status.MAX_ITERATIONS, ""
        iterations = matvecs = 0
        residual_norm = b_norm
        while True:
            if residual_norm <= self.tol * b_norm:
                status = Status.CONVERGED
                message = f"‖r‖/‖b‖ <= {self.tol:g} after {iterations} iterations"
                break
            if iterations == self.max_iter:
                message = f"‖r‖/‖b‖ = {residual_norm / b_norm:.3g} after {iterations} iterations"
                break
            product = matvec(direction)
            matvecs += 1
            curvature = float(dot(direction, product))
            if not math.isfinite(curvature):
                status, message = Status.DIVERGED, f"non-finite pᵀAp at iteration {iterations}"
                break
            if curvature <= 0:
                extras["curvature"] = curvature
                status = Status.NEGATIVE_CURVATURE
                message = (
                    f"pᵀ(H + μI)p = {curvature:.3g} <= 0 at iteration {iterations}: "
                    "H is not positive definite along p; increase damping"
                )
                break
            step = rz / curvature
            add_(solution, direction, alpha=step)
            add_(residual, product, alpha=-step)
            del product
            if self.preconditioner:
                z = self.preconditioner(residual)
                rz_next = float(dot(residual, z))
                residual_norm = float(norm(residual))
            else:
                rz_next = float(dot(residual, residual))
                residual_norm = math.sqrt(rz_next)
            direction = add(z, direction, alpha=rz_next / rz)  # the product's memory, reused
            rz = rz_next
            iterations += 1
        if status != Status.DIVERGED and not all_finite(solution):
            status, message = Status.DIVERGED, "the CG iterate is not finite"
        info = SolveInfo(
            solver="cg",
            status=status,
            iterations=iterations,
            matvecs=matvecs,
            residual=residual_norm / b_norm if b_norm > 0 else 0.0,
            message=message,
            extras=extras,
        )
        return solution, info
