"""Truncated Neumann series for A⁻¹ b (Lorraine, Vicol & Duvenaud, 2020, Algorithm 3).

For a step α with spectral radius ρ(I − αA) < 1,

    A⁻¹ b = α Σ_{k≥0} (I − αA)ᵏ b   ≈   x_K = α Σ_{k=0}^{K} (I − αA)ᵏ b,

using K products with A (term k+1 is term k minus α A·term k). The truncation error is exactly
A⁻¹ b − x_K = A⁻¹ (I − αA)^{K+1} b, so the error shrinks geometrically with rate ρ(I − αA).

The series diverges when ρ(I − αA) ≥ 1: when α > 2/λmax, or when A has an eigenvalue ≤ 0
(a non-convex training loss), whatever α. Because A is symmetric, the ratio of successive term
norms ‖t_{k+1}‖/‖t_k‖ never decreases and is bounded by ρ(I − αA): it is a free power-iteration
estimate of that spectral radius, reported as ``spectral_radius_estimate``.

* ratio ≥ 1 but no term has grown to ``growth_limit`` times the first: the infinite series
  does not converge, yet the truncated sum is a usable, regularised approximation (typical early
  in training, when H has small negative eigenvalues; Lorraine et al. run a 3-term series on
  such indefinite Hessians). It is returned with status ``unstable``.
* a term ``growth_limit`` (default 10) times the first, ‖t_k‖ > 10·‖t_0‖, or a non-finite one:
  the sum is dominated by the amplified components (t_0 = αb is the sum without any curvature)
  and can only get worse, since the ratios never decrease. The solver stops and reports
  ``diverged`` rather than return garbage (seed 000's failure: terms growing 2.7× per term,
  or no step α at all). A term a few percent larger than the first is not an explosion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hpo_cli.core.hvp import MatVec, damped
from hpo_cli.core.solvers.base import SolveInfo, Status
from hpo_cli.core.vectors import (
    TensorList,
    add_,
    clone,
    dot,
    norm,
    scale,
    scale_,
    zeros_like,
)


def estimate_largest_eigenvalue(
    matvec: MatVec, start: TensorList, iterations: int
) -> tuple[float, int]:
    """Power iteration for the eigenvalue of largest magnitude of a symmetric A.

    Returns the Rayleigh quotient vᵀAv/vᵀv of the last iterate (a lower bound on |λ|max that
    converges to λmax when it dominates; negative when the dominant eigenvalue is negative) and
    the number of products used.
    """
    vector = scale(start, 1.0 / float(norm(start)))
    estimate = math.nan
    for step in range(1, iterations + 1):
        product = matvec(vector)
        estimate = float(dot(vector, product))
        product_norm = float(norm(product))
        if product_norm == 0.0 or not math.isfinite(product_norm):
            return estimate, step
        vector = product  # normalised in place: two weight-sized vectors alive, not three
        scale_(vector, 1.0 / product_norm)
    return estimate, iterations


@dataclass(frozen=True)
class Neumann:
    """Truncated Neumann series x_K = α Σ_{k=0}^{K} (I − αA)ᵏ b.

    Args:
        terms: K, the number of products with A (the highest power in the sum); 3 by default,
            hpo-run's default study (a few terms give a usable hypergradient direction).
        alpha: the step α, or ``"auto"`` for α = 1/λ̂max with λ̂max from ``power_iterations``
            steps of power iteration (which cost extra products).
        power_iterations: power-iteration steps used by ``alpha="auto"``.
        tol: stop early once ‖t_k‖ ≤ tol·‖t_0‖ (the remaining terms are negligible); 0 runs all
            K terms.
        growth_limit: report ``diverged`` once ‖t_k‖ > growth_limit·‖t_0‖ (> 1).
        damping: μ ≥ 0: the series is summed for A + μI (every eigenvalue shifted up by μ), which
            converges for some α once μ > −λmin(A).
    """

    terms: int = 3
    alpha: float | str = "auto"
    power_iterations: int = 10
    tol: float = 0.0
    growth_limit: float = 10.0
    damping: float = 0.0

    def __post_init__(self) -> None:
        if self.terms < 0:
            raise ValueError(f"neumann.terms must be >= 0, got {self.terms}")
        if self.alpha != "auto" and not (isinstance(self.alpha, int | float) and self.alpha > 0):
            raise ValueError(f"neumann.alpha must be > 0 or 'auto', got {self.alpha!r}")
        if self.power_iterations < 1:
            raise ValueError(f"neumann.power_iterations must be >= 1, got {self.power_iterations}")
        if not self.growth_limit > 1:
            raise ValueError(f"neumann.growth_limit must be > 1, got {self.growth_limit}")
        if self.damping < 0:
            raise ValueError(f"neumann.damping must be >= 0, got {self.damping}")

    def __call__(self, matvec: MatVec, b: TensorList) -> tuple[list[torch.Tensor], SolveInfo]:
        matvec = damped(matvec, self.damping)
        extras: dict[str, float] = {"damping": self.damping}
        matvecs = 0
        b_norm = float(norm(b))
        if b_norm == 0.0:
            return zeros_like(b), SolveInfo("neumann", Status.CONVERGED, message="b = 0, so x = 0")
        if not math.isfinite(b_norm):
            info = SolveInfo("neumann", Status.DIVERGED, message="b = ∂L_v/∂w is not finite")
            return [torch.full_like(x, math.nan) for x in b], info
        if self.alpha == "auto":
            largest, matvecs = estimate_largest_eigenvalue(matvec, b, self.power_iterations)
            extras["lambda_max_estimate"] = largest
            if not 0.0 < largest < math.inf:
                info = SolveInfo(
                    solver="neumann",
                    status=Status.DIVERGED,
                    matvecs=matvecs,
                    message=(
                        f"the dominant eigenvalue of H is estimated at {largest:.3g}: not a "
                        "positive finite number (H is not positive definite or not finite), so "
                        "no step α makes the Neumann series converge; set damping > 0 "
                        "(solver.damping) or use cg"
                    ),
                    extras=extras,
                )
                return [torch.full_like(x, math.nan) for x in b], info
            alpha = 1.0 / largest
        else:
            alpha = float(self.alpha)
        extras["alpha"] = alpha

        # Three weight-sized vectors live across iterations, each updated in place: the term
        # t_k, the partial sum x_k and the product A t_k.
        term = scale(b, alpha)
        solution = clone(term)
        first_norm = previous_norm = alpha * b_norm
        status, message, iterations = Status.MAX_ITERATIONS, f"summed {self.terms} terms", 0
        for k in range(1, self.terms + 1):
            product = matvec(term)
            add_(term, product, alpha=-alpha)
            del product
            matvecs += 1
            iterations = k
            term_norm = float(norm(term))
            ratio = term_norm / previous_norm
            extras["spectral_radius_estimate"] = ratio
            if not math.isfinite(term_norm) or term_norm > self.growth_limit * first_norm:
                status = Status.DIVERGED
                message = (
                    f"term {k} grew to {term_norm / first_norm:.3g}× the first (limit "
                    f"{self.growth_limit:g}×, ρ(I − αH) >= {ratio:.4g}) with α = {alpha:.3g}: "
                    "the series explodes; take α < 2/λmax, set damping > 0 (solver.damping), "
                    "or use cg"
                )
                break
            add_(solution, term)
            previous_norm = term_norm
            if term_norm <= self.tol * first_norm:
                status, message = Status.CONVERGED, f"terms fell below tol after {k} terms"
                break
        if status == Status.MAX_ITERATIONS and extras.get("spectral_radius_estimate", 0.0) >= 1:
            status = Status.UNSTABLE
            message += (
                f"; ρ(I − αH) >= {extras['spectral_radius_estimate']:.4g}, so more terms would "
                "not converge (H has eigenvalues <= 0 or α > 2/λmax)"
            )
        # Every term kept in the sum is at most growth_limit times the finite first one: finite.
        info = SolveInfo(
            solver="neumann",
            status=status,
            iterations=iterations,
            matvecs=matvecs,
            message=message,
            extras=extras,
        )
        return solution, info
