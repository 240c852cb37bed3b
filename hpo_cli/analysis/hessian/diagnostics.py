"""What the spectrum predicts for the inverse-Hessian solvers of :mod:`hpo_cli.core.solvers`.

Neumann series x_K = α Σ_{k≤K} (I − αH)ᵏ b: the error shrinks like ρᴷ with
ρ = ρ(I − αH) = max(|1 − αλmin|, |1 − αλmax|), so the series converges iff ρ < 1, i.e. iff
λmin > 0 and 0 < α < 2/λmax. With an eigenvalue ≤ 0 no step α is safe (|1 − αλmin| ≥ 1); an
exactly singular H leaves its null-space component untouched (ρ = 1). Reaching relative
accuracy ε takes about ln ε / ln ρ terms.

Conjugate gradient on H x = b with H positive definite and κ = λmax/λmin: the error in the
H-norm falls below ε after at most ⌈½ √κ ln(2/ε)⌉ iterations (the Chebyshev bound); an
eigenvalue < 0 can stop it at a direction of negative curvature.

Eigenvalues with |λ| ≤ ``zero_tolerance`` (the rank tolerance) count as zero, so that rounding
noise around 0 in a singular H is not mistaken for negative curvature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def _radius(value: float) -> str:
    """ρ readably: close to 1 as 1 ∓ δ, so that 1 − 1e−5 does not print as 1."""
    if value != 1 and abs(value - 1) < 1e-3:
        return f"1 {'−' if value < 1 else '+'} {abs(value - 1):.3g}"
    return f"{value:.4g}"


@dataclass(frozen=True)
class NeumannDiagnosis:
    """Attributes:
    alpha: the step α diagnosed (1.0 is the series without a step, as in seed 000).
    spectral_radius: ρ(I − αH).
    converges: ρ < 1.
    safe_alpha_max: 2/λmax when λmin > 0, else None (no α is safe).
    terms_per_decade: ln 10 / (−ln ρ), terms per factor 10 of accuracy (None unless ρ < 1).
    message: one line, ``converges: …`` or ``diverges: …`` / ``stalls: …``.
    """

    alpha: float
    spectral_radius: float
    converges: bool
    safe_alpha_max: float | None
    terms_per_decade: float | None
    message: str


def neumann_diagnosis(
    smallest: float, largest: float, alpha: float = 1.0, zero_tolerance: float = 0.0
) -> NeumannDiagnosis:
    """Diagnose the Neumann series with step ``alpha`` for H with extreme eigenvalues
    ``smallest`` ≤ ``largest``."""
    if not alpha > 0:
        raise ValueError(f"neumann_alpha={alpha} must be > 0")
    radius = max(abs(1 - alpha * smallest), abs(1 - alpha * largest))
    positive = smallest > zero_tolerance
    safe = 2.0 / largest if positive else None
    converges = radius < 1 and positive
    per_decade = math.log(10) / -math.log(radius) if converges and radius > 0 else None
    step = f"α = {alpha:.4g}"
    if converges:
        assert safe is not None
        decade = "1 term" if per_decade is None else f"{per_decade:.3g} terms"
        message = (
            f"converges: ρ(I − αH) = {_radius(radius)} < 1 with {step} (safe for 0 < α < 2/λmax = "
            f"{safe:.4g}); about {decade} per decade of accuracy"
        )
    elif smallest < -zero_tolerance:
        message = (
            f"diverges: H has a negative eigenvalue λmin = {smallest:.4g}, so ρ(I − αH) = "
            f"{_radius(radius)} ≥ 1 with {step} and for every α > 0 (largest safe α: none); damp H "
            f"by μ > {-smallest:.4g}, use the Gauss-Newton matrix, or train closer to a minimum"
        )
    elif not positive:
        message = (
            f"stalls: H is singular (λmin = {smallest:.3g} within the rank tolerance "
            f"{zero_tolerance:.3g}), so ρ(I − αH) ≥ 1 with {step}: the null-space component "
            f"of b is never reduced (largest safe α: none); damp H by μ > 0"
        )
    else:
        message = (
            f"diverges: {step} exceeds the largest safe α = 2/λmax = {safe:.4g} "
            f"(λmax = {largest:.4g}), so ρ(I − αH) = {_radius(radius)} ≥ 1; use α < {safe:.4g}, "
            f"e.g. α = 1/λmax = {1 / largest:.4g}"
        )
    return NeumannDiagnosis(alpha, radius, converges, safe, per_decade, message)


@dataclass(frozen=True)
class CGDiagnosis:
    """Attributes:
    condition: κ = λmax/λmin used for the prediction (inf when H is not positive definite).
    tolerance: ε, the relative accuracy asked for.
    iterations: ⌈½ √κ ln(2/ε)⌉ (None when H is not positive definite).
    message: one line.
    """

    condition: float
    tolerance: float
    iterations: int | None
    message: str


def cg_iterations(condition: float, tolerance: float) -> int:
    """⌈½ √κ ln(2/ε)⌉, the Chebyshev bound on CG iterations for relative accuracy ε."""
    return math.ceil(0.5 * math.sqrt(condition) * math.log(2 / tolerance))


def cg_diagnosis(
    smallest: float, largest: float, tolerance: float, zero_tolerance: float = 0.0
) -> CGDiagnosis:
    """Predict CG on H x = b from H's extreme eigenvalues ``smallest`` ≤ ``largest``."""
    if smallest > zero_tolerance:
        condition = largest / smallest
        iterations = cg_iterations(condition, tolerance)
        message = (
            f"CG: κ = λmax/λmin = {condition:.4g}, at most ≈ ½√κ ln(2/ε) = {iterations} "
            f"iterations for ε = {tolerance:.3g}"
        )
        return CGDiagnosis(condition, tolerance, iterations, message)
    if smallest < -zero_tolerance:
        message = (
            f"CG: H is indefinite (λmin = {smallest:.4g}); CG may stop at negative curvature; "
            f"damp by μ > {-smallest:.4g} (κ of H + μI = (λmax + μ)/(λmin + μ))"
        )
    else:
        message = (
            f"CG: H is singular (λmin = {smallest:.3g}); CG converges only for b in the range "
            f"of H; damp by μ > 0 for κ = (λmax + μ)/μ"
        )
    return CGDiagnosis(math.inf, tolerance, None, message)
