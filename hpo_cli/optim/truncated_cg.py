"""Hessian-free's inner solver: truncated, preconditioned CG on the quadratic model (Martens, 2010).

CG minimises the quadratic model φ(x) = ½ xᵀA x − bᵀx of the damped system A x = b,
A = B + λI (B the curvature, λ the damping) and b = −∇f, so that φ(x) = q(x) − q(0) is the
model's predicted change of the objective. Unlike :class:`hpo_cli.core.solvers.ConjugateGradient`,
Hessian-free needs more than the final x:

* φ along the iterates, for Martens' relative-progress stop: at iteration i > k, stop when
  φ(x_i) < 0 and (φ(x_i) − φ(x_{i−k})) / φ(x_i) < k·ε, with k = max(10, ⌈0.1·i⌉). φ is read
  off the residual r = b − A x for free: φ(x) = −½ xᵀ(r + b).
* iterates saved at iterations ⌈γʲ⌉ (γ = 1.3, j = 0, 1, ...) and at the last one, among which
  the optimiser backtracks on the true objective;
* a warm start x₀ (the previous step's solution, decayed); a warm start with φ(x₀) > 0, worse
  than x = 0, is dropped.

A direction p with pᵀA p ≤ 0 (the Hessian curvature, too little damping) stops CG before it
divides by it, keeping the iterate reached so far. Vectors are lists of tensors
(:mod:`hpo_cli.core.vectors`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from hpo_cli.core.hvp import MatVec
from hpo_cli.core.vectors import TensorList, add, dot, norm, zeros_like

Preconditioner = Callable[[TensorList], list[torch.Tensor]]
"""v ↦ M⁻¹v for a symmetric positive definite M ≈ A."""


class StopReason:
    """Why the truncated CG stopped (``CGRun.stop_reason``)."""

    PROGRESS = "relative_progress"  # Martens' criterion: φ has stopped improving
    CONVERGED = "converged"  # ‖r‖ ≤ tol·‖b‖
    MAX_ITERATIONS = "max_iterations"
    NEGATIVE_CURVATURE = "negative_curvature"  # pᵀA p ≤ 0: the iterate so far is kept
    NON_FINITE = "non_finite"  # pᵀA p is NaN or infinite: the iterate so far is kept


@dataclass(frozen=True)
class SavedIterate:
    """An iterate x_i of CG and its model value φ(x_i)."""

    iteration: int
    x: list[torch.Tensor]
    model_value: float


@dataclass(frozen=True)
class CGRun:
    """The outcome of :func:`truncated_cg`.

    Attributes:
        saved: the iterates at iterations ⌈γʲ⌉ and the last one, in increasing iteration order
            (only the start, iteration 0, when CG made no iteration).
        model_values: φ(x_i) for i = 0 (the start) to ``iterations``.
        iterations: CG iterations made (one product with A each).
        matvecs: products with A, including the one a warm start costs.
        stop_reason: one of :class:`StopReason`.
    """

    saved: list[SavedIterate]
    model_values: list[float]
    iterations: int
    matvecs: int
    stop_reason: str

    @property
    def solution(self) -> list[torch.Tensor]:
        """The last iterate."""
        return self.saved[-1].x


def save_grid(max_iter: int, ratio: float = 1.3) -> set[int]:
    """The iterations ⌈ratioʲ⌉, j = 0, 1, ..., up to ``max_iter``: 1, 2, 3, 4, 5, 7, 9, 11, ..."""
    grid, j = set(), 0
    while (iteration := math.ceil(ratio**j)) <= max_iter:
        grid.add(iteration)
        j += 1
    return grid


def truncated_cg(
    matvec: MatVec,
    b: TensorList,
    x0: TensorList | None = None,
    *,
    max_iter: int,
    tol: float = 1e-10,
    progress_tol: float = 5e-4,
    preconditioner: Preconditioner | None = None,
    save_ratio: float = 1.3,
) -> CGRun:
    """Minimise φ(x) = ½ xᵀA x − bᵀx by preconditioned CG from ``x0`` (zero when ``None``).

    Args:
        matvec: v ↦ A v, A symmetric (damping included).
        b: the right-hand side, shaped like the parameters.
        x0: the warm start.
        max_iter: the most CG iterations.
        tol: stop when ‖r‖ ≤ tol·‖b‖ (guards against dividing by a vanished residual).
        progress_tol: ε of the relative-progress criterion; 0 disables it.
        preconditioner: v ↦ M⁻¹v; ``None`` for plain CG.
        save_ratio: γ of the grid ⌈γʲ⌉ of saved iterates.
    """
    precondition = preconditioner or list
    matvecs = 0
    x = zeros_like(b) if x0 is None else [t.detach() for t in x0]
    residual = list(b)
    if x0 is not None:
        residual = add(b, matvec(x), alpha=-1.0)
        matvecs += 1
        if -0.5 * float(dot(x, add(residual, b))) > 0:  # φ(x₀) > 0: worse than starting at 0
            x, residual = zeros_like(b), list(b)
    values = [-0.5 * float(dot(x, add(residual, b)))]
    saved: list[SavedIterate] = []
    grid = save_grid(max_iter, save_ratio)
    b_norm = float(norm(b))
    z = precondition(residual)
    direction = list(z)
    rz = float(dot(residual, z))
    iteration = 0
    while True:
        if float(norm(residual)) <= tol * b_norm:
            reason = StopReason.CONVERGED
            break
        if iteration == max_iter:
            reason = StopReason.MAX_ITERATIONS
            break
        product = matvec(direction)
        matvecs += 1
        curvature = float(dot(direction, product))
        if not math.isfinite(curvature):
            reason = StopReason.NON_FINITE
            break
        if curvature <= 0:
            reason = StopReason.NEGATIVE_CURVATURE
            break
        step = rz / curvature
        x = add(x, direction, alpha=step)
        residual = add(residual, product, alpha=-step)
        z = precondition(residual)
        rz_next = float(dot(residual, z))
        direction = add(z, direction, alpha=rz_next / rz)
        rz = rz_next
        iteration += 1
        value = -0.5 * float(dot(x, add(residual, b)))
        values.append(value)
        if iteration in grid:
            saved.append(SavedIterate(iteration, x, value))
        k = max(10, math.ceil(0.1 * iteration))
        stalled = progress_tol > 0 and iteration > k and value < 0
        if stalled and (value - values[iteration - k]) / value < k * progress_tol:
            reason = StopReason.PROGRESS
            break
    if not saved or saved[-1].iteration != iteration:
        saved.append(SavedIterate(iteration, x, values[-1]))
    return CGRun(saved, values, iteration, matvecs, reason)
