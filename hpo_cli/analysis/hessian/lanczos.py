"""Matrix-free eigenvalues of a symmetric operator by Lanczos iterations.

* :func:`extreme_eigenvalues`: the k largest or smallest eigenvalues by implicitly restarted
  Lanczos (ARPACK through ``scipy.sparse.linalg.eigsh`` on a ``LinearOperator``; ``which="LA"``
  for the largest algebraic, ``"SA"`` for the smallest), falling back to plain Lanczos Ritz
  values when ARPACK does not converge in its budget. ARPACK works on host NumPy vectors, so
  each product moves one vector to the operator's device and the result back; the operator
  itself (model, data, graph) stays where it is.
* :func:`lanczos_tridiagonal`: m steps of plain Lanczos from a given start vector, with full
  re-orthogonalisation, on the operator's device: Q (d×m) orthonormal and the tridiagonal
  T = Qᵀ A Q (m×m) whose eigenpairs (θ_j, y_j) are the Gauss quadrature rule of the spectral
  measure of A seen from the start vector (nodes θ_j, weights y_j[0]²).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hpo_cli.analysis.hessian.operators import SymmetricOperator


@dataclass(frozen=True)
class ExtremeEigenvalues:
    """Attributes:
    values: float64 array (k,), ascending.
    converged: True when ARPACK converged to relative accuracy ``tol``. False: ARPACK ran out
        of restarts (typical for a large cluster of equal eigenvalues at that end, such as the
        weight-decay floor of a Gauss-Newton matrix) and ``values`` are the k extreme Ritz values
        of plain Lanczos instead, which lie inside the spectrum: the smallest is ≥ λmin and the
        largest ≤ λmax.
    """

    values: np.ndarray
    converged: bool


def extreme_eigenvalues(
    operator: SymmetricOperator,
    k: int,
    which: str,
    seed: int = 0,
    tol: float = 1e-10,
    maxiter: int = 100,
    fallback_steps: int = 200,
) -> ExtremeEigenvalues:
    """The k eigenvalues of largest (``which="LA"``) or smallest (``"SA"``) value.

    Args:
        operator: a symmetric d×d operator, 0 < k < d.
        k: how many eigenvalues.
        which: ``"LA"`` or ``"SA"``.
        seed: seeds the start vector, so a call is reproducible.
        tol: ARPACK's relative accuracy |θ − λ| ≤ tol·|θ| (0: machine precision).
        maxiter: ARPACK restarts allowed, each about ncv − k products (ncv = min(d, max(2k+1,
            32)) Lanczos vectors).
        fallback_steps: Lanczos steps for the Ritz values used when ARPACK does not converge.
    """
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh  # 0.2 s: on use

    size = operator.size
    if not 0 < k < size:
        raise ValueError(f"k={k} must satisfy 0 < k < d={size} for Lanczos; use dense analysis")
    if which not in ("LA", "SA"):
        raise ValueError(f"which={which!r} must be 'LA' or 'SA'")

    def product(vector: np.ndarray) -> np.ndarray:
        flat = torch.as_tensor(np.ascontiguousarray(vector).reshape(-1))
        result = operator.flat_matvec(flat.to(operator.device, operator.dtype))
        return result.detach().to("cpu", torch.float64).numpy()

    linear_operator = LinearOperator((size, size), matvec=product, dtype=np.float64)
    start = np.random.default_rng(seed).standard_normal(size)
    try:
        values = eigsh(
            linear_operator,
            k=k,
            which=which,
            v0=start,
            tol=tol,
            ncv=min(size, max(2 * k + 1, 32)),
            maxiter=maxiter,
            return_eigenvectors=False,
        )
        return ExtremeEigenvalues(np.sort(values), converged=True)
    except ArpackNoConvergence:
        first = torch.as_tensor(start).to(operator.device, operator.dtype)
        diagonal, off = lanczos_tridiagonal(operator, first, min(size, fallback_steps))
        ritz = np.linalg.eigvalsh(tridiagonal_matrix(diagonal, off).numpy())
        chosen = ritz[:k] if which == "SA" else ritz[-k:]
        return ExtremeEigenvalues(np.sort(chosen), converged=False)


def tridiagonal_matrix(diagonal: torch.Tensor, off_diagonal: torch.Tensor) -> torch.Tensor:
    """The symmetric tridiagonal matrix T (m, m), float64 on the CPU."""
    matrix = torch.diag(diagonal.to("cpu", torch.float64))
    if len(off_diagonal):
        off = off_diagonal.to("cpu", torch.float64)
        matrix += torch.diag(off, 1) + torch.diag(off, -1)
    return matrix


def lanczos_tridiagonal(
    operator: SymmetricOperator, start: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """m ≤ ``steps`` Lanczos steps from ``start`` (d,): the diagonal α (m,) and off-diagonal
    β (m−1,) of T = Qᵀ A Q with q_1 = start/‖start‖.

    Stops early (m < steps) when the Krylov space is invariant (β_j ≈ 0): T then carries the
    start vector's spectral measure exactly.
    """
    basis = [start / torch.linalg.vector_norm(start)]
    alphas: list[torch.Tensor] = []
    betas: list[torch.Tensor] = []
    eps = torch.finfo(start.dtype).eps
    norm_estimate = 0.0  # running lower bound on ‖A‖ from the entries of T
    for step in range(steps):
        current = basis[-1]
        product = operator.flat_matvec(current)
        alpha = torch.dot(current, product)
        alphas.append(alpha)
        norm_estimate = max(norm_estimate, float(alpha.abs()))
        if step == steps - 1:
            break
        residual = product - alpha * current
        if betas:
            residual = residual - betas[-1] * basis[-2]
        stacked = torch.stack(basis, dim=1)  # (d, j): full re-orthogonalisation, twice
        for _ in range(2):
            residual = residual - stacked @ (stacked.T @ residual)
        beta = torch.linalg.vector_norm(residual)
        if float(beta) <= eps * operator.size * norm_estimate:
            break
        norm_estimate = max(norm_estimate, float(beta))
        betas.append(beta)
        basis.append(residual / beta)
    return torch.stack(alphas), (torch.stack(betas) if betas else start.new_zeros(0))
