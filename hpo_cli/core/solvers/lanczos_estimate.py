"""A few Lanczos steps for the extreme eigenvalues of a symmetric A: the step α = 1/λ̂max of the
Neumann series with ``alpha="auto"``.

m steps of the Lanczos recurrence from q₁ = s/‖s‖,

    β_j q_{j+1} = A q_j − a_j q_j − β_{j−1} q_{j−1},   a_j = q_jᵀ A q_j,   β_j = ‖β_j q_{j+1}‖,

give the m×m tridiagonal T (diagonal a, off-diagonal β) whose eigenvalues, the Ritz values
θ_1 ≤ … ≤ θ_m, lie in [λmin, λmax] and approach both ends from inside. θ_m is the largest
Rayleigh quotient over the Krylov space span{s, As, …, A^{m−1}s}, which holds the iterate of m − 1
power-iteration steps: with the same m products it is never below power iteration's estimate,
and it converges at the rate of a Chebyshev polynomial in the eigenvalue gap rather than of
(λ₂/λ₁)^m (Kaniel–Paige–Saad). In ``benchmarks.solvers_in_the_loop``, 10 products from ∂L_v/∂w
give a λ̂max at 0.998–1.000 of ARPACK's λmax (median over the run; 0.97 at worst), where power
iteration's was up to 20 % low.

No re-orthogonalisation: in floating point the q_j lose orthogonality as Ritz values converge,
which duplicates converged Ritz values but does not carry the extreme ones outside the spectrum
(Paige, 1980). So the estimate needs three weight-sized vectors; the basis is kept only when its
first vectors are asked for (the Neumann series summed in the Krylov space,
``Neumann(krylov_series=True)``), and then without q₁ = s/‖s‖: the caller holds s, so the first K
vectors cost K − 1 weight-sized vectors. The Ritz vector of θ_m (a warm start for the next
estimate), Σ_j y_j q_j with y the eigenvector of T, is summed in a second pass of the recurrence
with the coefficients of the first (m − 1 more products, the same q_j; one weight-sized vector
more than the estimate, instead of the m vectors of a kept basis).

The coefficients stay on the device until the end (one host read per estimate). On the CPU,
where a read costs nothing, each β_j is read at once, so a breakdown (β_j ≈ 0: the Krylov space
is invariant and its Ritz values are exact eigenvalues) stops without spending more products;
elsewhere T is cut at the breakdown afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from hpo_cli.core.hvp import MatVec
from hpo_cli.core.vectors import TensorList, add_, dot, norm, scale, scale_, zeros_like

BREAKDOWN = 100  # β_j ≤ this × machine ε × max|T| counts as a breakdown (an invariant subspace)
CPU_READS_EACH_STEP = True  # on the CPU a read costs nothing and spares the products past one


@dataclass(frozen=True)
class LanczosExtremes:
    """Attributes:
    largest: θ_max, the largest Ritz value (≤ λmax; nan when a product was not finite).
    smallest: θ_min, the smallest Ritz value (≥ λmin).
    matvecs: products with A spent.
    vector: the unit Ritz vector of θ_max (a TensorList like the start), when asked for.
    tridiagonal: T (float64, on the host), cut at a breakdown; its size m is the dimension of
        the Krylov space (``matvecs`` unless it broke down).
    start: the start s itself (the caller's tensors, not a copy): q_1 = s/‖s‖.
    start_norm: ‖s‖.
    basis: the Lanczos vectors q_2, q_3, … after q_1 that were asked to be kept (at most
        m − 1): A q_j = β_{j−1} q_{j−1} + a_j q_j + β_j q_{j+1}, so A^k s = ‖s‖ Q T^k e₁ for
        k < m.
    """

    largest: float
    smallest: float
    matvecs: int
    vector: list[torch.Tensor] | None = None
    tridiagonal: torch.Tensor | None = None
    start: list[torch.Tensor] | None = None
    start_norm: float = 1.0
    basis: list[list[torch.Tensor]] = field(default_factory=list)

    def leading(self, count: int) -> tuple[list[list[torch.Tensor]], list[float]]:
        """q_1, …, q_count (at most 1 + len(basis)) as vectors v_j and scales σ_j with
        q_j = σ_j v_j (v_1 = s, σ_1 = 1/‖s‖; then σ_j = 1): for :func:`combination` and Gram
        matrices without a copy of s."""
        vectors = [self.start, *self.basis[: count - 1]]
        return vectors, [1.0 / self.start_norm] + [1.0] * (len(vectors) - 1)

    @property
    def dominant(self) -> float:
        """The Ritz value of largest magnitude (signed): the estimate of the eigenvalue that
        power iteration converges to."""
        return self.smallest if -self.smallest > self.largest else self.largest


def lanczos_extremes(
    matvec: MatVec,
    start: TensorList,
    iterations: int,
    ritz_vector: bool = False,
    keep_basis: int = 0,
) -> LanczosExtremes:
    """``iterations`` Lanczos steps from ``start`` (a nonzero TensorList): θ_max, θ_min, the
    products spent, T, the first ``keep_basis`` Lanczos vectors (one weight-sized vector each;
    q_1 is not copied: :meth:`LanczosExtremes.leading` gives it from ``start``) and, with
    ``ritz_vector``, the unit Ritz vector of θ_max (m − 1 more products:
    :func:`_ritz_vector`)."""
    read_each = CPU_READS_EACH_STEP and start[0].device.type == "cpu"
    start_norm = norm(start)
    vector = scale(start, 1.0 / start_norm)
    previous = zeros_like(vector)
    basis: list[list[torch.Tensor]] = []  # q_2, q_3, …: q_1 is start/‖start‖
    diagonal: list[torch.Tensor] = []
    off_diagonal: list[torch.Tensor] = []
    dtype = vector[0].dtype
    beta = torch.zeros((), dtype=dtype, device=vector[0].device)
    for _ in range(iterations):
        product = matvec(vector)
        a = dot(vector, product)
        add_(product, vector, alpha=-a)
        add_(product, previous, alpha=-beta)
        beta = norm(product)
        diagonal.append(a)
        off_diagonal.append(beta)
        if read_each and _breakdown_size(_floats(diagonal), _floats(off_diagonal), dtype):
            break
        scale_(product, 1.0 / beta.clamp_min(torch.finfo(beta.dtype).tiny))
        previous, vector = vector, product
        if len(basis) + 1 < keep_basis:
            basis.append(vector)
    del vector, previous, product  # the Ritz vector's pass makes its own
    matvecs = len(diagonal)
    a_host = torch.stack(diagonal).double().cpu()  # the one host read
    b_host = torch.stack(off_diagonal).double().cpu()
    size = _breakdown_size(a_host.tolist(), b_host.tolist(), dtype) or matvecs
    if not (torch.isfinite(a_host[:size]).all() and torch.isfinite(b_host[: size - 1]).all()):
        return LanczosExtremes(math.nan, math.nan, matvecs)
    tridiagonal = (
        torch.diag(a_host[:size])
        + torch.diag(b_host[: size - 1], 1)
        + torch.diag(b_host[: size - 1], -1)
    )
    values, vectors = torch.linalg.eigh(tridiagonal)
    estimate = LanczosExtremes(
        float(values[-1]),
        float(values[0]),
        matvecs,
        None,
        tridiagonal,
        start,
        float(start_norm),
        basis[: size - 1],
    )
    if not ritz_vector:
        return estimate
    ritz = _ritz_vector(matvec, start, start_norm, diagonal, off_diagonal, vectors[:, -1].tolist())
    scale_(ritz, 1.0 / norm(ritz))
    return replace(estimate, vector=ritz, matvecs=matvecs + size - 1)


def _ritz_vector(
    matvec: MatVec,
    start: TensorList,
    start_norm: torch.Tensor,
    diagonal: list[torch.Tensor],
    off_diagonal: list[torch.Tensor],
    weights: list[float],
) -> list[torch.Tensor]:
    """Σ_j weights[j]·q_j over the first len(weights) Lanczos vectors, regenerated by the
    recurrence with the first pass's coefficients a_j, β_j (the same operations, so the same
    q_j): len(weights) − 1 products, four weight-sized vectors at a time."""
    vector = scale(start, 1.0 / start_norm)
    previous: list[torch.Tensor] | None = None  # q_0 = 0
    total = scale(vector, weights[0])
    for j, weight in enumerate(weights[1:]):
        product = matvec(vector)
        add_(product, vector, alpha=-diagonal[j])
        if previous is not None:
            add_(product, previous, alpha=-off_diagonal[j - 1])
        beta = off_diagonal[j]
        scale_(product, 1.0 / beta.clamp_min(torch.finfo(beta.dtype).tiny))
        previous, vector = vector, product
        add_(total, vector, alpha=weight)
    return total


def combination(basis: list[list[torch.Tensor]], weights: list[float]) -> list[torch.Tensor]:
    """Σ_j weights[j]·basis[j] for Lanczos vectors (TensorLists) and as many weights."""
    total = scale(basis[0], weights[0])
    for weight, vector in zip(weights[1:], basis[1:], strict=True):
        add_(total, vector, alpha=weight)
    return total


def _floats(values: list[torch.Tensor]) -> list[float]:
    return [float(value) for value in values]


def _breakdown_size(
    diagonal: list[float], off_diagonal: list[float], dtype: torch.dtype
) -> int | None:
    """j + 1 for the first step j whose β_j is a breakdown (β_j ≤ BREAKDOWN·ε·max|T| over the
    entries so far) or whose coefficients are not finite; None when there is none. The one
    test of both schedules: each step's on the CPU, all of them after the run elsewhere."""
    level, bound = BREAKDOWN * torch.finfo(dtype).eps, 0.0
    for j, (a, beta) in enumerate(zip(diagonal, off_diagonal, strict=True)):
        if not (math.isfinite(a) and math.isfinite(beta)):
            return j + 1
        bound = max(bound, abs(a), beta)
        if beta <= level * bound:
            return j + 1
    return None


def estimate_largest_eigenvalue(
    matvec: MatVec, start: TensorList, iterations: int
) -> tuple[float, int]:
    """The Ritz value of largest magnitude after ``iterations`` Lanczos steps (signed: what
    power iteration converges to) and the products spent."""
    estimate = lanczos_extremes(matvec, start, iterations)
    return estimate.dominant, estimate.matvecs
