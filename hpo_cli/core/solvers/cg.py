"""Conjugate gradient for the damped system (A + μI) x = b (Hestenes & Stiefel, 1952).

CG needs A + μI symmetric positive definite. A training-loss Hessian need not be: when a search
direction p has pᵀ(A + μI)p ≤ 0 the step length would divide by a non-positive curvature, so
the solver stops there, keeps the iterate it has (the truncated-CG answer of Steihaug, 1983)
and reports ``negative_curvature``. Damping μ > 0 shifts the spectrum up by μ and is the usual
cure.

With a preconditioner M ≈ (A + μI), symmetric positive definite and applied as z = M⁻¹r, this
is preconditioned CG (PCG): p₀ = z₀, α = rᵀz/pᵀ(A + μI)p, x ← x + αp, r ← r − α(A + μI)p,
β = r_newᵀz_new/r_oldᵀz_old, p ← z + βp. In exact arithmetic it converges in at most d
iterations, faster when the spectrum of M^{-1/2}(A + μI)M^{-1/2} is clustered. The diagonal
preconditioners by name (Hutchinson's estimate of diag A, the inner optimiser's second moments)
are in :mod:`hpo_cli.core.solvers.diagonal`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from hpo_cli.core.hvp import MatVec, damped
from hpo_cli.core.solvers.base import SolveInfo, SolverState, Status, WarmSolver
from hpo_cli.core.solvers.diagonal import hutchinson_diagonal, spd_diagonal
from hpo_cli.core.vectors import (
    TensorList,
    add,
    add_,
    all_finite,
    clone,
    dot,
    norm,
    scale,
    zeros_like,
)

Preconditioner = Callable[[TensorList], list[torch.Tensor]]
PRECONDITIONERS = ("none", "hutchinson", "adam")  # the preconditioners by name
PROBE_SEED = 0  # the Rademacher probes' generator starts here; its state is solver state
CHECK_EVERY = 4  # iterations between two host reads of the stopping state on an accelerator
CPU_CHECK_EVERY = 1  # on the CPU a read costs nothing and spares the products past the stop
_STOPS = {  # the device's stop code → status and message
    0: (Status.MAX_ITERATIONS, "‖r‖/‖b‖ = {ratio:.3g} after {iterations} iterations"),
    1: (Status.CONVERGED, "‖r‖/‖b‖ <= {tol:g} after {iterations} iterations"),
    2: (
        Status.NEGATIVE_CURVATURE,
        "pᵀ(H + μI)p = {curvature:.3g} <= 0 at iteration {iterations}: H is not positive "
        "definite along p; increase damping",
    ),
    3: (Status.DIVERGED, "non-finite pᵀAp at iteration {iterations}"),
}


@dataclass(frozen=True)
class CGState(SolverState):
    """What one CG solve hands to the next (all ``None`` before the first).

    Attributes:
        solution: the previous solution x_prev (``warm_start``), shaped like b.
        diagonal: Hutchinson's m of M = diag(m) (``preconditioner="hutchinson"``), shaped like b.
        calls: solves since ``diagonal`` was estimated.
        generator: the Rademacher probes' ``torch.Generator`` state.
    """

    solution: list[torch.Tensor] | None = None
    diagonal: list[torch.Tensor] | None = None
    calls: int = 0
    generator: torch.Tensor | None = None


@dataclass(frozen=True)
class ConjugateGradient(WarmSolver):
    """Preconditioned conjugate gradient from x₀ = 0, or warm from the previous call's solution.

    Args:
        max_iter: the most iterations (one product with A each), ≥ 1 (0 would return x = 0, a
            hypergradient without its implicit term); 20 by default, a budget per hypergradient
            rather than a full solve (raise it, or use ``tol``, for one).
        tol: stop when ‖r‖ ≤ tol·‖b‖, r = b − (A + μI)x the recursively updated residual.
        damping: μ ≥ 0 added to the diagonal.
        preconditioner: M ≈ A + μI, by name or as a callable v ↦ M⁻¹v (library use):

            * ``"none"``: plain CG (M = I).
            * ``"hutchinson"``: M = diag(m), m = max(|d̂| + μ, 0.001·mean(|d̂| + μ)) with d̂ the
              Hutchinson estimate of diag(A) from ``probes`` products with Rademacher probes
              (counted in ``SolveInfo.matvecs``), re-estimated every ``refresh_every`` calls
              and kept in between (in :class:`CGState`, like the warm start). |·| and the floor make
              M SPD where diag(A) or its estimate is ≤ 0 (an indefinite Hessian, few probes);
              see :func:`hpo_cli.core.solvers.diagonal.spd_diagonal`.
            * ``"adam"``: m = √v̂ + ε of the inner Adam/AdamW/RMSprop optimiser (its own
              denominator), floored likewise, recomputed every call at no product's cost from
              the ``second_moments`` the caller passes to :meth:`solve` (``JointOptimizer``
              reads them from its inner optimiser at every hyper-step); without them the solve
              is plain CG.
        warm_start: start from x₀ = s·x_prev, the previous call's solution scaled to the new
            right-hand side by the least-squares factor s = ⟨b, Ax_prev⟩/‖Ax_prev‖² (one
            product, counted), so that ‖b − Ax₀‖ ≤ ‖b‖; when the warm residual is not smaller
            than ‖b‖ (or the shapes differ) it starts cold from 0. x_prev is the ``solution``
            of the :class:`CGState` passed to :meth:`solve` (the caller keeps it between solves;
            hpo-run checkpoints it).
        probes: Rademacher probes (products with A) of one Hutchinson estimate.
        refresh_every: calls between two Hutchinson estimates (1: every call).
        compile: run each iteration's vector arithmetic (the two dot products, the updates of
            x, r and p, the stopping tests; everything but the product with A, which comes from
            autograd) as one ``torch.compile``d function: fewer kernels and passes over memory,
            at a one-off compilation of seconds to tens of seconds per model (measured in
            docs/performance.md; off by default).
    """

    max_iter: int = 20
    tol: float = 1e-6
    damping: float = 0.0
    preconditioner: str | Preconditioner = "none"
    warm_start: bool = False
    probes: int = 4
    refresh_every: int = 10
    compile: bool = False

    def __post_init__(self) -> None:
        if self.max_iter < 1:
            raise ValueError(
                f"cg.max_iter must be >= 1, got {self.max_iter} (0 iterations give x = 0: a zero "
                "implicit term in every hypergradient)"
            )
        if self.tol < 0:
            raise ValueError(f"cg.tol must be >= 0, got {self.tol}")
        if self.damping < 0:
            raise ValueError(f"cg.damping must be >= 0, got {self.damping}")
        if not callable(self.preconditioner) and self.preconditioner not in PRECONDITIONERS:
            raise ValueError(
                f"cg.preconditioner must be one of {', '.join(PRECONDITIONERS)} (or a callable "
                f"v ↦ M⁻¹v), got {self.preconditioner!r}"
            )
        for key in ("probes", "refresh_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"cg.{key} must be >= 1, got {getattr(self, key)}")

    @property
    def reads_second_moments(self) -> bool:
        """``preconditioner="adam"`` preconditions with the inner optimiser's second moments."""
        return self.preconditioner == "adam"

    def init_state(self) -> CGState:
        return CGState()

    def _precondition(
        self,
        matvec: MatVec,
        b: TensorList,
        state: CGState,
        second_moments: TensorList | None,
    ) -> tuple[Preconditioner | None, int, dict[str, float], CGState]:
        """v ↦ M⁻¹v (``None``: M = I), the products spent on it (Hutchinson's probes, with the
        undamped ``matvec``), its extras for :class:`SolveInfo` and the state with the
        Hutchinson diagonal, its call count and its generator."""
        if callable(self.preconditioner):
            return self.preconditioner, 0, {}, state
        if self.preconditioner == "adam":
            if second_moments is None or [m.shape for m in second_moments] != [x.shape for x in b]:
                return None, 0, {"preconditioned": 0.0}, state
            return _divide_by(spd_diagonal(second_moments)), 0, {"preconditioned": 1.0}, state
        if self.preconditioner == "none":
            return None, 0, {}, state
        diagonal = state.diagonal
        usable = diagonal is not None and [m.shape for m in diagonal] == [x.shape for x in b]
        products = 0
        if usable and state.calls % self.refresh_every != 0:
            state = replace(state, calls=state.calls + 1)
        else:
            generator = torch.Generator()
            if state.generator is not None:
                generator.set_state(state.generator)
            else:
                generator.manual_seed(PROBE_SEED)
            estimate = hutchinson_diagonal(matvec, b, self.probes, generator)
            diagonal = spd_diagonal(estimate, shift=self.damping)
            state = replace(state, diagonal=diagonal, calls=1, generator=generator.get_state())
            products = self.probes
        diagonal = [m.to(x) for m, x in zip(diagonal, b, strict=True)]
        extras = {"preconditioner_products": float(products)}
        return _divide_by(diagonal), products, extras, state

    def _start(
        self, matvec: MatVec, b: TensorList, b_norm: float, state: CGState
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], int, bool]:
        """x₀, r₀ = b − (A + μI)x₀, the products spent and whether x₀ is warm (see
        ``warm_start``; else x₀ = 0, r₀ = b)."""
        previous = state.solution
        if (
            not self.warm_start
            or previous is None
            or [v.shape for v in previous] != [x.shape for x in b]
        ):
            return zeros_like(b), clone(b), 0, False
        previous = [v.to(x) for v, x in zip(previous, b, strict=True)]
        product = matvec(previous)
        product_norm2 = float(dot(product, product))
        factor = float(dot(b, product)) / product_norm2 if product_norm2 > 0 else math.nan
        if math.isfinite(factor):
            residual = add(b, product, alpha=-factor)
            if float(norm(residual)) < b_norm:
                return scale(previous, factor), residual, 1, True
        return zeros_like(b), clone(b), 1, False

    def solve(
        self,
        matvec: MatVec,
        b: TensorList,
        state: CGState,
        *,
        second_moments: TensorList | None = None,
    ) -> tuple[list[torch.Tensor], SolveInfo, CGState]:
        """x ≈ (A + μI)⁻¹ b shaped like b, its :class:`SolveInfo` and the next :class:`CGState`
        (see :class:`hpo_cli.core.solvers.base.InverseHVPSolver`)."""
        # The iterate x and residual r are updated in place: each iteration allocates the
        # product (A + μI) p and, once that is freed, the next direction (and z = M⁻¹r when
        # preconditioned). Without a preconditioner z = r, so rᵀz = ‖r‖² is also the squared
        # residual norm. Step lengths and stopping tests stay on the device: an iteration that
        # should not happen (converged, pᵀAp ≤ 0 or not finite) takes a step of 0 and freezes
        # the state, and the host reads whether the solve still runs every ``checks``
        # iterations (one synchronisation), so at most ``checks`` − 1 products are spent past
        # the stop and the iterate is the one a check after every iteration gives. On the CPU,
        # where a read costs nothing (checks = 1), the step lengths are read as numbers
        # (``_foreach_add`` with a number is faster there than with a 0-d tensor).
        b_norm = float(norm(b))
        if not math.isfinite(b_norm):
            info = SolveInfo("cg", Status.DIVERGED, message="b = ∂L_v/∂w is not finite")
            return [torch.full_like(x, math.nan) for x in b], info, state
        precondition, probe_products, precondition_extras, state = self._precondition(
            matvec, b, state, second_moments
        )
        matvec = damped(matvec, self.damping)
        solution, residual, matvecs, warm = self._start(matvec, b, b_norm, state)
        matvecs += probe_products
        z = precondition(residual) if precondition is not None else residual
        direction = clone(z)
        rz = dot(residual, z)
        residual_norm = norm(residual)
        threshold = self.tol * b_norm
        device = residual_norm.device
        checks = CPU_CHECK_EVERY if device.type == "cpu" else CHECK_EVERY
        # read every iteration anyway on the CPU; a compiled iteration keeps tensors throughout
        on_host = float if checks == 1 and not self.compile else torch.Tensor.detach
        running = residual_norm > threshold
        stop = torch.zeros((), dtype=torch.int64, device=device)  # a _STOPS code, 0: none
        iterations = torch.zeros((), dtype=torch.int64, device=device)
        curvature_at_stop = torch.full((), math.nan, device=device)
        scalars = (rz, running, stop, iterations, residual_norm, curvature_at_stop)
        bound = torch.full((), threshold, dtype=residual_norm.dtype, device=device)
        iterate = _compiled_iteration() if self.compile else _iteration
        for iteration in range(self.max_iter):
            if iteration % checks == 0 and not bool(scalars[1]):
                break
            matvecs += 1
            direction, scalars = iterate(
                solution,
                residual,
                direction,
                matvec(direction),
                scalars,
                bound,
                precondition,
                on_host,
            )
        _, _, stop, iterations, residual_norm, curvature_at_stop = scalars
        code, iterations, residual_norm, curvature = torch.stack(
            [stop.double(), iterations.double(), residual_norm.double(), curvature_at_stop.double()]
        ).tolist()
        iterations = int(iterations)
        extras = {"damping": self.damping, "warm_start": float(warm), **precondition_extras}
        if code == 0 and residual_norm <= threshold:
            code = 1  # converged before the first product (or exactly at tol 0)
        status, message = _STOPS[int(code)]
        if code == 2:
            extras["curvature"] = curvature
            message = message.format(curvature=curvature, iterations=iterations)
        else:
            message = message.format(
                tol=self.tol, iterations=iterations, ratio=residual_norm / b_norm if b_norm else 0.0
            )
        if status != Status.DIVERGED and not all_finite(solution):
            status, message = Status.DIVERGED, "the CG iterate is not finite"
        if self.warm_start and status != Status.DIVERGED:
            state = replace(state, solution=[x.detach().clone() for x in solution])
        info = SolveInfo(
            solver="cg",
            status=status,
            iterations=iterations,
            matvecs=matvecs,
            residual=residual_norm / b_norm if b_norm > 0 else 0.0,
            message=message,
            extras=extras,
        )
        return solution, info, state


def _divide_by(diagonal: list[torch.Tensor]) -> Preconditioner:
    """v ↦ M⁻¹v = v / m entrywise for M = diag(m), m > 0."""
    return lambda vector: list(torch._foreach_div(list(vector), diagonal))


Scalars = tuple[torch.Tensor, ...]  # rᵀz, running, stop code, iterations, ‖r‖, pᵀAp at the stop


def _iteration(
    solution: list[torch.Tensor],
    residual: list[torch.Tensor],
    direction: list[torch.Tensor],
    product: list[torch.Tensor],
    scalars: Scalars,
    threshold: torch.Tensor,
    precondition: Preconditioner | None,
    on_host: Callable[[torch.Tensor], Any],
) -> tuple[list[torch.Tensor], Scalars]:
    """One PCG iteration once q = (A + μI)p is known: x ← x + αp and r ← r − αq in place,
    α = rᵀz/pᵀq; then z = M⁻¹r, β = r_newᵀz_new/r_oldᵀz_old; returns p ← z + βp and the
    updated 0-d ``scalars``. Where the solve no longer runs (converged, pᵀq ≤ 0 or not finite)
    α = β = 0 and the scalars are frozen, so nothing changes (see ``__call__``)."""
    rz, running, stop, iterations, residual_norm, curvature_at_stop = scalars
    curvature = dot(direction, product)
    step_ok = running & (curvature > 0)  # False for a non-finite pᵀAp too
    stopped_here = running & ~step_ok
    finite = torch.isfinite(curvature)
    stop = torch.where(stopped_here, torch.where(finite, 2, 3), stop)
    curvature_at_stop = torch.where(stopped_here, curvature, curvature_at_stop)
    step = on_host(torch.where(step_ok, rz / curvature, 0.0))
    add_(solution, direction, alpha=step)
    add_(residual, product, alpha=-step)
    del product
    if precondition is not None:
        z = precondition(residual)
        rz_next = dot(residual, z)
        new_norm = norm(residual)
    else:
        z = residual
        rz_next = dot(residual, residual)
        new_norm = rz_next.sqrt()
    converged = step_ok & (new_norm <= threshold)
    stop = torch.where(converged, 1, stop)
    iterations = iterations + step_ok
    residual_norm = torch.where(step_ok, new_norm, residual_norm)
    beta = on_host(torch.where(step_ok, rz_next / rz, 0.0))
    direction = add(z, direction, alpha=beta)  # the product's memory, reused
    rz = torch.where(step_ok, rz_next, rz)
    running = step_ok & ~converged
    return direction, (rz, running, stop, iterations, residual_norm, curvature_at_stop)


@functools.cache
def _compiled_iteration() -> Callable[..., tuple[list[torch.Tensor], Scalars]]:
    """:func:`_iteration` through ``torch.compile`` (Inductor; a C++ compiler on the CPU),
    compiled on first use for each set of shapes, dtypes and devices (``dynamic=False``)."""
    return torch.compile(_iteration, dynamic=False)
