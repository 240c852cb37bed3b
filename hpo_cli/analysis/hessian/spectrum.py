"""Dense spectral analysis of a symmetric matrix: eigenvalues, numerical rank, conditioning.

For eigenvalues λ_1 ≤ … ≤ λ_d of a symmetric H (d up to a few thousand):

* tolerance τ: an eigenvalue with |λ| ≤ τ is counted as zero. Default τ = max|λ| · d · ε, with ε
  the machine epsilon of the dtype the matrix was computed in (NumPy's ``matrix_rank`` rule):
  eigenvalues that small are indistinguishable from rounding errors of a matrix of that norm.
  ``rtol`` replaces it by τ = rtol · max|λ|.
* rank r = #{i : |λ_i| > τ}; the gap min_{kept}|λ| / max_{dropped}|λ| says how well the split
  is determined (≫ 1: a clear cut; ≈ 1: the rank depends on the tolerance). None when nothing is
  dropped (or nothing kept), inf when every dropped eigenvalue is exactly 0.
* condition numbers over |λ| (H may be indefinite): κ_nonzero = max|λ| / min_{|λ|>τ}|λ| over
  the kept spectrum, κ_full = max|λ| / min|λ| over all of it, inf when H is singular (r < d).
* negative: #{i : λ_i < −τ}, the directions of negative curvature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hpo_cli.analysis.hessian.operators import SymmetricOperator
from hpo_cli.core.hvp import dense_matrix


@dataclass(frozen=True)
class Spectrum:
    """Every eigenvalue of a symmetric matrix and what follows from them (see module doc).

    Attributes:
        eigenvalues: all d eigenvalues in ascending order, float64 on the CPU, shape (d,).
        tolerance: τ, the magnitude below which an eigenvalue counts as zero.
        rank: r, the number of eigenvalues with |λ| > τ.
        gap: smallest kept |λ| over largest dropped |λ| (None: nothing dropped or kept).
        condition_nonzero: max|λ| / min|λ| over the kept eigenvalues (nan when r = 0).
        condition_full: max|λ| / min|λ| over all eigenvalues; inf when r < d.
        negative: the number of eigenvalues below −τ.
        trace: Σ λ_i.
        asymmetry: ‖H − Hᵀ‖_F / ‖H‖_F of the matrix analysed (rounding only; 0 when not known).
    """

    eigenvalues: torch.Tensor
    tolerance: float
    rank: int
    gap: float | None
    condition_nonzero: float
    condition_full: float
    negative: int
    trace: float
    asymmetry: float = 0.0

    @property
    def size(self) -> int:
        return len(self.eigenvalues)

    @property
    def smallest(self) -> float:
        return float(self.eigenvalues[0])

    @property
    def largest(self) -> float:
        return float(self.eigenvalues[-1])


def default_tolerance(max_abs: float, size: int, dtype: torch.dtype) -> float:
    """τ = max|λ| · d · ε(dtype)."""
    return max_abs * size * torch.finfo(dtype).eps


def analyse_eigenvalues(
    eigenvalues: torch.Tensor,
    dtype: torch.dtype | None = None,
    rtol: float | None = None,
    asymmetry: float = 0.0,
) -> Spectrum:
    """Rank, gap, condition numbers and inertia of a spectrum (d,) (any order).

    Args:
        eigenvalues: the eigenvalues of a symmetric matrix.
        dtype: the precision the matrix was computed in, for the default tolerance (default:
            that of ``eigenvalues``).
        rtol: τ = rtol · max|λ| instead of max|λ| · d · ε.
        asymmetry: carried into the result.
    """
    values = eigenvalues.detach().to("cpu", torch.float64).sort().values
    magnitudes = values.abs()
    max_abs = float(magnitudes.max())
    if rtol is None:
        tolerance = default_tolerance(max_abs, len(values), dtype or eigenvalues.dtype)
    else:
        tolerance = rtol * max_abs
    kept = magnitudes[magnitudes > tolerance]
    dropped = magnitudes[magnitudes <= tolerance]
    rank = len(kept)
    if len(dropped) == 0 or rank == 0:
        gap = None
    else:
        largest_dropped = float(dropped.max())
        gap = math.inf if largest_dropped == 0.0 else float(kept.min()) / largest_dropped
    condition_nonzero = max_abs / float(kept.min()) if rank else math.nan
    min_abs = float(magnitudes.min())
    condition_full = math.inf if rank < len(values) or min_abs == 0.0 else max_abs / min_abs
    return Spectrum(
        eigenvalues=values,
        tolerance=tolerance,
        rank=rank,
        gap=gap,
        condition_nonzero=condition_nonzero,
        condition_full=condition_full,
        negative=int((values < -tolerance).sum()),
        trace=float(values.sum()),
        asymmetry=asymmetry,
    )


def dense_spectrum(operator: SymmetricOperator, rtol: float | None = None) -> Spectrum:
    """Form the d×d matrix with d products (:func:`hpo_cli.core.hvp.dense_matrix`), then
    :func:`analyse_eigenvalues` of ``torch.linalg.eigvalsh`` (on the operator's device).

    ``eigvalsh`` reads one triangle only; the asymmetry ‖H − Hᵀ‖_F/‖H‖_F of the formed matrix is
    reported so that a non-symmetric product (a bug, or rounding in float32) is visible.
    """
    matrix = dense_matrix(operator.matvec, operator.like)
    scale = torch.linalg.matrix_norm(matrix)
    asymmetry = float(torch.linalg.matrix_norm(matrix - matrix.T) / scale) if scale > 0 else 0.0
    eigenvalues = torch.linalg.eigvalsh(matrix)
    return analyse_eigenvalues(eigenvalues, operator.dtype, rtol, asymmetry)
