"""Truncated Neumann series for A⁻¹ b (Lorraine, Vicol & Duvenaud, 2020, Algorithm 3).

For a step α with spectral radius ρ(I − αA) < 1,

    A⁻¹ b = α Σ_{k≥0} (I − αA)ᵏ b   ≈   x_K = α Σ_{k=0}^{K−1} (I − αA)ᵏ b,

the sum of K terms (``terms=K``), using exactly K − 1 products with A (term 0 is αb; term k+1 is
term k minus α A·term k). The truncation error is exactly A⁻¹ b − x_K = A⁻¹ (I − αA)^K b, so the
error shrinks geometrically with rate ρ(I − αA). x_K is also the weight change of K plain SGD
steps with step α on a quadratic with Hessian A, so ``terms=K`` matches K unrolled SGD steps
(Lorraine et al.'s Theorem 2; ``tests/core/test_theorem2.py``). With ``alpha="auto"`` estimated
from b in m ≥ K Lanczos steps, every term already lies in that run's Krylov space, so with
``krylov_series=True`` the series is summed there without a product
(:meth:`Neumann._sum_in_krylov_space`): 10 steps and 4 terms cost 10 products, not 13, for
K − 1 more weight-sized vectors held during the estimate (q₁ is b rescaled, b the caller's).

Older versions summed K + 1 terms for ``terms=K`` (docs/solvers.md, migration note).

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
from dataclasses import dataclass, replace

import torch

from hpo_cli.core.hvp import MatVec, damped
from hpo_cli.core.solvers.base import SolveInfo, SolverState, Status, WarmSolver
from hpo_cli.core.solvers.lanczos_estimate import LanczosExtremes, combination, lanczos_extremes
from hpo_cli.core.vectors import (
    TensorList,
    add_,
    clone,
    dot,
    norm,
    scale,
    zeros_like,
)

CHECK_EVERY = 4  # terms between two host reads of the term norms (one sync) on an accelerator
CPU_CHECK_EVERY = 1  # on the CPU a read costs nothing and spares the products past the stop


@dataclass(frozen=True)
class NeumannState(SolverState):
    """What one Neumann solve hands to the next (``warm_start`` with ``alpha="auto"``).

    Attributes:
        largest: the kept λ̂max (``None``: estimate at the next solve).
        vector: its Ritz vector, shaped like b, the start of the next refresh.
        calls: solves since λ̂max was estimated.
    """

    largest: float | None = None
    vector: list[torch.Tensor] | None = None
    calls: int = 0


@dataclass(frozen=True)
class Neumann(WarmSolver):
    """Truncated Neumann series x_K = α Σ_{k=0}^{K−1} (I − αA)ᵏ b: K terms.

    Args:
        terms: K ≥ 1, the number of terms summed (powers 0..K−1): K − 1 products with A (none
            with ``krylov_series``), so ``terms=1`` is x = αb; 4 by default, hpo-run's default
            study (a few terms give a usable hypergradient direction).
        alpha: the step α, or ``"auto"`` for α = 1/λ̂max with λ̂max the largest Ritz value of
            ``lanczos_iterations`` Lanczos steps from b (extra products;
            :mod:`~hpo_cli.core.solvers.lanczos_estimate`).
        lanczos_iterations: Lanczos steps (products) of a cold estimate for ``alpha="auto"``.
        tol: stop early once ‖t_k‖ ≤ tol·‖t_0‖ (the remaining terms are negligible); 0 runs all
            K terms.
        warm_start: with ``alpha="auto"``, keep λ̂max and its Ritz vector between calls (one
            solver object per problem, as in a training loop, where H changes little from one
            outer step to the next): the next ``refresh_every − 1`` calls reuse λ̂max (no
            products), then ``refresh_iterations`` Lanczos steps from the kept Ritz vector
            refresh it (an estimate of m steps then takes m − 1 more products to form the Ritz
            vector, in a second pass of the recurrence, rather than keep m Lanczos vectors;
            one weight-sized vector is kept between calls). Safety: a series that diverges
            with a kept α (the series' own growth test) is summed once more after a refresh
            (its products count too). The kept values are the :class:`NeumannState` passed to
            and returned by :meth:`solve` (the caller keeps it; hpo-run checkpoints it).
        growth_limit: report ``diverged`` once ‖t_k‖ > growth_limit·‖t_0‖ (> 1).
        refresh_every: calls between two eigenvalue estimates when warm (1: every call).
        refresh_iterations: Lanczos steps of a warm refresh.
        krylov_series: with ``alpha="auto"``, an estimate from b and K ≤ ``lanczos_iterations``,
            sum the series in the estimate's Krylov space from its first K Lanczos vectors
            (kept during the estimate: K − 1 more weight-sized vectors at its peak, q_1 being
            b/‖b‖) instead of
            K − 1 more products; the same sum to rounding.
        damping: μ ≥ 0: the series is summed for A + μI (every eigenvalue shifted up by μ), which
            converges for some α once μ > −λmin(A).
    """

    terms: int = 4
    alpha: float | str = "auto"
    lanczos_iterations: int = 10
    tol: float = 0.0
    growth_limit: float = 10.0
    warm_start: bool = False
    refresh_every: int = 10
    refresh_iterations: int = 3
    damping: float = 0.0
    krylov_series: bool = False

    def __post_init__(self) -> None:
        if self.terms < 1:
            raise ValueError(
                f"neumann.terms must be >= 1 (the number of terms summed), got {self.terms}"
            )
        if self.alpha != "auto" and not (isinstance(self.alpha, int | float) and self.alpha > 0):
            raise ValueError(f"neumann.alpha must be > 0 or 'auto', got {self.alpha!r}")
        if not self.growth_limit > 1:
            raise ValueError(f"neumann.growth_limit must be > 1, got {self.growth_limit}")
        if self.damping < 0:
            raise ValueError(f"neumann.damping must be >= 0, got {self.damping}")
        for key in ("lanczos_iterations", "refresh_every", "refresh_iterations"):
            if getattr(self, key) < 1:
                raise ValueError(f"neumann.{key} must be >= 1, got {getattr(self, key)}")

    reads_second_moments = False

    def init_state(self) -> NeumannState:
        return NeumannState()

    def solve(
        self,
        matvec: MatVec,
        b: TensorList,
        state: NeumannState,
        *,
        second_moments: TensorList | None = None,
    ) -> tuple[list[torch.Tensor], SolveInfo, NeumannState]:
        """x_K shaped like b, its :class:`SolveInfo` and the next :class:`NeumannState` (see
        :class:`hpo_cli.core.solvers.base.InverseHVPSolver`; ``second_moments`` is unused)."""
        solution, info, new_state = self._solve(matvec, b, state, refresh=False)
        if info.diverged and info.extras.get("alpha_kept"):
            solution, retry, new_state = self._solve(matvec, b, state, refresh=True)  # safety net
            retry.matvecs += info.matvecs
            retry.extras["warm_retry"] = 1.0
            return solution, retry, new_state
        return solution, info, new_state

    def _largest_eigenvalue(
        self, matvec: MatVec, b: TensorList, refresh: bool, state: NeumannState
    ) -> tuple[float, int, bool, LanczosExtremes | None, NeumannState]:
        """λ̂max (the Ritz value of largest magnitude, signed: negative when H's dominant
        eigenvalue is), the products spent, whether it was kept from an earlier call (no
        products; never with ``refresh``) and, for an estimate from b, its Lanczos run (with
        the first K basis vectors, for :meth:`_sum_in_krylov_space`) and the next state."""
        vector = state.vector
        usable = (
            self.warm_start
            and vector is not None
            and state.largest is not None
            and [v.shape for v in vector] == [x.shape for x in b]
        )
        if usable and not refresh and state.calls % self.refresh_every != 0:
            return state.largest, 0, True, None, replace(state, calls=state.calls + 1)
        if usable:
            start = [v.to(x) for v, x in zip(vector, b, strict=True)]
            iterations = self.refresh_iterations
        else:
            start, iterations = b, self.lanczos_iterations
        estimate = lanczos_extremes(
            matvec,
            start,
            iterations,
            ritz_vector=self.warm_start,
            keep_basis=self.terms if self.krylov_series else 0,
        )
        largest = estimate.dominant
        if self.warm_start and 0.0 < largest < math.inf:
            state = NeumannState(largest=largest, vector=estimate.vector, calls=1)
        else:
            state = NeumannState()
        return largest, estimate.matvecs, False, None if usable else estimate, state

    def _solve(
        self, matvec: MatVec, b: TensorList, state: NeumannState, refresh: bool
    ) -> tuple[list[torch.Tensor], SolveInfo, NeumannState]:
        matvec = damped(matvec, self.damping)
        extras: dict[str, float] = {"damping": self.damping}
        matvecs = 0
        b_norm = float(norm(b))
        if b_norm == 0.0:
            info = SolveInfo("neumann", Status.CONVERGED, message="b = 0, so x = 0")
            return zeros_like(b), info, state
        if not math.isfinite(b_norm):
            info = SolveInfo("neumann", Status.DIVERGED, message="b = ∂L_v/∂w is not finite")
            return [torch.full_like(x, math.nan) for x in b], info, state
        if self.alpha == "auto":
            largest, matvecs, kept, krylov, state = self._largest_eigenvalue(
                matvec, b, refresh, state
            )
            extras["lambda_max_estimate"] = largest
            extras["alpha_kept"] = float(kept)
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
                return [torch.full_like(x, math.nan) for x in b], info, state
            alpha = 1.0 / largest
            if self.krylov_series and krylov is not None and len(krylov.basis) + 1 >= self.terms:
                extras["alpha"] = alpha
                solution, info = self._sum_in_krylov_space(krylov, alpha, b_norm, matvecs, extras)
                return solution, info, state
        else:
            alpha = float(self.alpha)
        extras["alpha"] = alpha

        # Three weight-sized vectors live across iterations, each updated in place: the term
        # t_k, the partial sum x_k and the product A t_k. The checks below read the term norms
        # on the host only every ``checks`` terms (one synchronisation each time): until then a
        # term joins the sum times an on-device mask (0 once a term grew past growth_limit times
        # the first or fell below tol), so the sum is the one a check after every term gives
        # (but a non-finite term, 0·inf, makes it non-finite: diverged either way), and at most
        # ``checks`` − 1 products are spent past the stop. On the CPU (checks = 1) each norm is
        # read at once and the loop stops right after, so no mask is kept there.
        term = scale(b, alpha)
        solution = clone(term)
        first_norm = previous_norm = alpha * b_norm
        status, message, iterations = Status.MAX_ITERATIONS, f"summed {self.terms} terms", 0
        checks = CPU_CHECK_EVERY if b[0].device.type == "cpu" else CHECK_EVERY
        limit = self.growth_limit * first_norm
        running = torch.ones((), dtype=torch.bool, device=b[0].device)
        pending: list[torch.Tensor] = []
        last = self.terms - 1  # the highest power summed: K − 1 products
        for k in range(1, last + 1):
            product = matvec(term)
            add_(term, product, alpha=-alpha)
            del product
            matvecs += 1
            term_norm_t = norm(term)
            if checks == 1:  # read now, and stop right after: no mask to keep on the device
                keep: float | torch.Tensor = float(float(term_norm_t) <= limit)  # 0 if not finite
            else:
                mask = running & (term_norm_t <= limit)  # False if not finite
                running = mask & (term_norm_t > self.tol * first_norm)
                keep = mask.to(term_norm_t.dtype)
            add_(solution, term, alpha=keep)
            pending.append(term_norm_t)
            if len(pending) < checks and k < last:
                continue
            first_term = k - len(pending) + 1
            norms = [float(pending[0])] if checks == 1 else torch.stack(pending).tolist()
            for j, term_norm in enumerate(norms, start=first_term):
                iterations = j
                stop = self._check_term(j, term_norm, previous_norm, first_norm, alpha, extras)
                previous_norm = term_norm
                if stop is not None:
                    status, message = stop
                    break
            pending.clear()
            if status != Status.MAX_ITERATIONS:
                break
        return solution, self._info(status, message, iterations, matvecs, extras), state

    def _sum_in_krylov_space(
        self,
        krylov: LanczosExtremes,
        alpha: float,
        b_norm: float,
        matvecs: int,
        extras: dict[str, float],
    ) -> tuple[list[torch.Tensor], SolveInfo]:
        """The series from the Lanczos run that estimated λ̂max from b, without a product.

        Its m ≥ K steps give A^k b = ‖b‖ Q T^k e₁ for k < m, so the terms are
        t_k = α(I − αA)^k b = Q c_k with c_0 = α‖b‖e₁ and c_{k+1} = c_k − αT c_k, where c_k
        lives on the first k + 1 coordinates (only the leading K×K block of T and the
        first K Lanczos vectors q_j enter, k = 0..K−1). The norms are ‖t_k‖² = c_kᵀ G c_k with
        the Gram matrix G = QᵀQ of those vectors, exact even where rounding has cost them their
        orthogonality (one host read), and the stopping tests are the term-by-term ones.
        """
        size = self.terms
        block = krylov.tridiagonal[:size, :size]
        coefficients = [torch.zeros(size, dtype=torch.float64)]
        coefficients[0][0] = alpha * b_norm
        for _ in range(size - 1):
            coefficients.append(coefficients[-1] - alpha * (block @ coefficients[-1]))
        basis, scales = krylov.leading(size)  # q_j = scales[j]·basis[j]; basis[0] is b itself
        pairs = [(i, j) for i in range(size) for j in range(i, size)]
        dots = torch.stack([dot(basis[i], basis[j]) for i, j in pairs]).double().cpu()
        gram = torch.zeros(size, size, dtype=torch.float64)
        for (i, j), value in zip(pairs, dots.tolist(), strict=True):
            gram[i, j] = gram[j, i] = value * scales[i] * scales[j]
        norms = [math.sqrt(abs(float(c @ gram @ c))) for c in coefficients]
        first_norm = previous_norm = alpha * b_norm
        status, message, iterations = Status.MAX_ITERATIONS, f"summed {self.terms} terms", 0
        included = coefficients[0].clone()
        for j in range(1, size):
            iterations = j
            stop = self._check_term(j, norms[j], previous_norm, first_norm, alpha, extras)
            previous_norm = norms[j]
            if stop is not None and stop[0] == Status.DIVERGED:
                status, message = stop
                break
            included += coefficients[j]
            if stop is not None:
                status, message = stop
                break
        weights = [c * sigma for c, sigma in zip(included.tolist(), scales, strict=True)]
        solution = combination(basis, weights)
        extras["series_from_lanczos_basis"] = 1.0
        return solution, self._info(status, message, iterations, matvecs, extras)

    def _check_term(
        self,
        j: int,
        term_norm: float,
        previous_norm: float,
        first_norm: float,
        alpha: float,
        extras: dict[str, float],
    ) -> tuple[Status, str] | None:
        """The test after term j: ``diverged`` (the term is left out of the sum), ``converged``
        (the term is the last one summed) or None (go on); records ‖t_j‖/‖t_{j−1}‖."""
        ratio = term_norm / previous_norm
        extras["spectral_radius_estimate"] = ratio
        if not math.isfinite(term_norm) or term_norm > self.growth_limit * first_norm:
            return Status.DIVERGED, (
                f"term {j} grew to {term_norm / first_norm:.3g}× the first (limit "
                f"{self.growth_limit:g}×, ρ(I − αH) >= {ratio:.4g}) with "
                f"α = {alpha:.3g}: the series explodes; take α < 2/λmax, set "
                "damping > 0 (solver.damping), or use cg"
            )
        if term_norm <= self.tol * first_norm:
            return Status.CONVERGED, f"terms fell below tol after {j} terms"
        return None

    def _info(
        self,
        status: Status,
        message: str,
        iterations: int,
        matvecs: int,
        extras: dict[str, float],
    ) -> SolveInfo:
        """The solve's report (``iterations``: the highest power computed, one product each);
        a sum of all K terms whose last ratio is ≥ 1 is ``unstable``."""
        if status == Status.MAX_ITERATIONS and extras.get("spectral_radius_estimate", 0.0) >= 1:
            status = Status.UNSTABLE
            message += (
                f"; ρ(I − αH) >= {extras['spectral_radius_estimate']:.4g}, so more terms would "
                "not converge (H has eigenvalues <= 0 or α > 2/λmax)"
            )
        return SolveInfo(
            solver="neumann",
            status=status,
            iterations=iterations,
            matvecs=matvecs,
            message=message,
            extras=extras,
        )
