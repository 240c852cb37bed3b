"""How close the cheap inverse-HVP solvers come to the exact hypergradient, against their budget.

Lorraine, Vicol & Duvenaud (2020) compare approximations of H⁻¹ in the IFT hypergradient

    g(S) = ∂L_v/∂λ − (∂²L_t/∂λ∂w)ᵀ S(∂L_v/∂w),      S(b) ≈ H⁻¹ b,

by how well g(S) matches g* = g(H⁻¹) as the number of Hessian-vector products K grows. This
module computes, for given solvers S (the identity, Neumann with K terms, CG with K steps), both
of its measures against g* from a dense solve (:class:`~hpo_cli.core.solvers.Exact`):

    cosine(g, g*) = ⟨g, g*⟩ / (‖g‖ ‖g*‖),        relative error = ‖g − g*‖ / ‖g*‖.

Every g is :func:`hpo_cli.core.hypergradient` with that solver, on the same two losses (rebuilt for
each solve, at the same weights and λ); nothing is trained and nothing is written (hpo-run's
``solver_comparison`` option calls this every few outer steps and writes
``solver_comparison.csv``). Besides the Hessian's solvers, ``ggn_cg`` is CG on the Gauss-Newton
matrix plus the penalty's Hessian (:mod:`hpo_cli.core.curvature`), ``unrolled`` the hypergradient
through K steps of the inner optimiser (:mod:`hpo_cli.core.unrolled`) and ``first_order`` the
SAMA-style hypergradient with the inner optimiser's preconditioner in place of H⁻¹
(:mod:`hpo_cli.core.first_order`, no products), each computed by a callable the caller
supplies. :mod:`hpo_cli.analysis.training_response` compares the same estimates with what the
real training does over a horizon.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from hpo_cli.analysis.training_response import agreement
from hpo_cli.core.curvature import curvature_matvec
from hpo_cli.core.hvp import TrainingCurvature, dense_matrix
from hpo_cli.core.hypergradient import Hypergradient, hypergradient
from hpo_cli.core.solvers import ConjugateGradient, Exact, Identity, InverseHVPSolver, Neumann
from hpo_cli.core.vectors import flatten

Losses = Callable[[], tuple[torch.Tensor, torch.Tensor]]
"""Builds (L_t, L_v) with fresh autograd graphs, at the current weights and λ."""

OutputLosses = Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | float]]
"""Builds (L_t, L_v, the outputs L_t's data term came from, the penalty R): for ``ggn_cg``."""

Unroll = Callable[[int], tuple[torch.Tensor, ...]]
"""K ↦ the unrolled hypergradient through K inner steps (:mod:`hpo_cli.core.unrolled`)."""

FirstOrderEstimate = Callable[[], Hypergradient]
"""() ↦ the first-order hypergradient (:class:`hpo_cli.core.first_order.FirstOrder`)."""

SOLVER_FAMILIES = ("identity", "neumann", "cg", "ggn_cg", "unrolled", "first_order")
"""The solvers :func:`budget_sweep` knows; ``identity`` and ``first_order`` cost no products, so
they have no K."""

UNROLLED_STEPS = (1, 2, 5, 10, 20, 50, 100, 200)
"""The K of ``unrolled`` up to the budget: each costs a K-step unroll, so not every K."""


@dataclass(frozen=True)
class Candidate:
    """One solver to compare: its family name, its budget K and the solver itself."""

    name: str
    k: int
    solver: InverseHVPSolver | None  # None: unrolled or first_order, by the caller's callable
    curvature: str = "hessian"


@dataclass(frozen=True)
class SolverComparison:
    """One solver's hypergradient g against the exact one g*.

    Attributes:
        solver: the family name (``identity``, ``neumann``, ``cg``, or ``exact`` for g* itself).
        k: the budget K: Neumann terms or CG steps (0 for the identity; d for ``exact``).
        hvps: Hessian-vector products the solver used (d for ``exact``: one per column of H).
        cosine: ⟨g, g*⟩/(‖g‖‖g*‖); 0 when g = 0, NaN when the solver failed.
        rel_error: ‖g − g*‖/‖g*‖; NaN when the solver failed or g* = 0.
        status: the solver's status (``converged``, ``max_iterations``, ``diverged``, ...).
        reference: what g* is: ``dense`` (the dense IFT solve) or ``unrolled`` (the unrolled
            hypergradient through ``horizon`` steps of the inner optimiser).
        horizon: the reference's inner steps (0 for ``dense``).
        fd_correlation: Pearson correlation of ⟨g, d_i⟩ with central differences of the real
            training's validation loss over ``horizon`` steps, over random directions d_i (NaN for
            ``dense``).
        time_s: seconds to compute g.
    """

    solver: str
    k: int
    hvps: int
    cosine: float
    rel_error: float
    status: str
    reference: str = "dense"
    horizon: int = 0
    fd_correlation: float = math.nan
    time_s: float = math.nan


@dataclass(frozen=True)
class Estimate:
    """One candidate's flat hypergradient (``None`` when it failed), its cost and status."""

    solver: str
    k: int
    hvps: int
    status: str
    grads: torch.Tensor | None
    time_s: float


def budget_sweep(names: Sequence[str], budget: int, alpha: float | None) -> list[Candidate]:
    """The candidates of the paper's comparison, for K = 0..``budget``.

    Args:
        names: solver families among :data:`SOLVER_FAMILIES`.
        budget: the largest K.
        alpha: Neumann's fixed step α (0 < α < 2/λmax for convergence; :func:`neumann_step`
            is the usual choice), so that K terms cost exactly K products; unused without
            ``neumann``.

    Returns:
        ``Neumann(terms=K + 1, alpha)`` (K + 1 terms, K products) and
        ``ConjugateGradient(max_iter=K, tol=0)`` (K full steps, no early stop) for every K ≥ 1
        and, for K = 0, x = 0 (``Identity(scale=0)``: where CG starts, which it refuses to stop
        at);
        ``Identity()`` once, with K = 0; ``first_order`` once, with K = 0.
    ``ggn_cg``: ``ConjugateGradient(max_iter=K, tol=0)`` on the Gauss-Newton curvature;
    ``unrolled``: K steps for K in :data:`UNROLLED_STEPS` up to ``budget``.
    """
    unknown = sorted(set(names) - set(SOLVER_FAMILIES))
    if unknown:
        raise ValueError(f"unknown solvers {unknown}: choose among {list(SOLVER_FAMILIES)}")
    if "neumann" in names and alpha is None:
        raise ValueError("neumann needs a step alpha")
    candidates = []
    for name in names:
        if name == "identity":
            candidates.append(Candidate(name, 0, Identity()))
        if name == "first_order":
            candidates.append(Candidate(name, 0, None))
        if name == "unrolled":
            candidates += [Candidate(name, k, None) for k in UNROLLED_STEPS if k <= budget]
        for k in range(budget + 1):
            if name == "neumann":
                candidates.append(Candidate(name, k, Neumann(terms=k + 1, alpha=alpha)))
            elif name in ("cg", "ggn_cg"):
                curvature = "ggn" if name == "ggn_cg" else "hessian"
                solver = ConjugateGradient(max_iter=k, tol=0.0) if k else Identity(scale=0.0)
                candidates.append(Candidate(name, k, solver, curvature))
    return candidates


def neumann_step(train_loss: torch.Tensor, params: Sequence[torch.Tensor]) -> float:
    """α = 1/λmax of the dense H = ∂²L_t/∂w² (d products, d² memory; for small models).

    For a positive definite H the series then converges at the rate ρ(I − αH) = 1 − λmin/λmax.

    Raises:
        ValueError: λmax ≤ 0, so that no step α makes the series converge.
    """
    hessian = dense_matrix(TrainingCurvature(train_loss, params).hvp, list(params))
    largest = float(torch.linalg.eigvalsh(0.5 * (hessian + hessian.T))[-1])
    if not largest > 0:
        raise ValueError(f"λmax(H) = {largest:.3g} <= 0 leaves the Neumann series no step α")
    return 1.0 / largest


def estimate_hypergradients(
    losses: Losses,
    params: Sequence[torch.Tensor],
    hparams: Sequence[torch.Tensor],
    candidates: Sequence[Candidate],
    reference: InverseHVPSolver | None = None,
    *,
    output_losses: OutputLosses | None = None,
    unroll: Unroll | None = None,
    first_order: FirstOrderEstimate | None = None,
) -> tuple[Estimate, list[Estimate]]:
    """The reference's hypergradient g* and each candidate's, flattened, with costs.

    Args:
        losses: builds the scalar L_t(w, λ) and L_v(w, λ) with their graphs; called once per
            solve, since :func:`hpo_cli.core.hypergradient` may free the graphs it differentiates.
        params: the weights w (d entries in all).
        hparams: the hyperparameters λ (p entries).
        candidates: the solvers to compare, e.g. :func:`budget_sweep`.
        reference: the solver of g*; default ``Exact(method="pinv")``, the dense H⁺b, which is
            H⁻¹b when H is invertible and still defined when it is not.
        output_losses: needed by ``ggn`` candidates.
        unroll: needed by ``unrolled`` candidates.
        first_order: needed by the ``first_order`` candidate.

    Raises:
        ValueError: the reference failed, or a candidate lacks what it needs.
    """
    params, hparams = list(params), list(hparams)

    def solve(solver: InverseHVPSolver, curvature: str) -> tuple[torch.Tensor | None, int, str]:
        if curvature == "hessian":
            train_loss, val_loss = losses()
            matvec = None
        else:
            if output_losses is None:
                raise ValueError(f"curvature={curvature} needs the network outputs")
            train_loss, val_loss, outputs, penalty = output_losses()
            matvec = curvature_matvec(curvature, train_loss, params, outputs, penalty)
        result = hypergradient(
            train_loss,
            val_loss,
            params,
            hparams,
            solver,
            check_residual=False,
            raise_on_failure=False,
            curvature=matvec,
        )
        grads = None if result.failure else flatten(result.grads).detach()
        return grads, result.hvps, result.solve.status

    def timed(candidate: Candidate) -> Estimate:
        started = time.perf_counter()
        if candidate.name == "first_order":
            if first_order is None:
                raise ValueError("the first_order candidate needs a first_order callable")
            result = first_order()
            grads = None if result.failure else flatten(result.grads).detach()
            hvps, status = result.hvps, result.solve.status
        elif candidate.solver is None:
            if unroll is None:
                raise ValueError("unrolled candidates need an unroll callable")
            grads = flatten(unroll(candidate.k)).detach()
            finite = bool(torch.isfinite(grads).all())
            grads, hvps, status = (grads if finite else None), candidate.k, "approximation"
        else:
            grads, hvps, status = solve(candidate.solver, candidate.curvature)
        elapsed = time.perf_counter() - started
        return Estimate(candidate.name, candidate.k, hvps, status, grads, elapsed)

    exact = timed(Candidate("exact", 0, reference or Exact(method="pinv")))
    if exact.grads is None:
        raise ValueError(f"the reference solve failed ({exact.status})")
    exact = Estimate("exact", exact.hvps, exact.hvps, exact.status, exact.grads, exact.time_s)
    return exact, [timed(candidate) for candidate in candidates]


def compare_hypergradients(
    losses: Losses,
    params: Sequence[torch.Tensor],
    hparams: Sequence[torch.Tensor],
    candidates: Sequence[Candidate],
    reference: InverseHVPSolver | None = None,
    **needs: OutputLosses | Unroll | FirstOrderEstimate | None,
) -> list[SolverComparison]:
    """Each candidate's hypergradient against the reference's, by cosine and relative error
    (arguments as :func:`estimate_hypergradients`).

    Returns:
        One :class:`SolverComparison` for g* itself (``exact``: cosine 1, error 0), then one
        per candidate, in order.
    """
    exact, estimates = estimate_hypergradients(
        losses, params, hparams, candidates, reference, **needs
    )
    return [compared(e, exact.grads) for e in [exact, *estimates]]


def compared(estimate: Estimate, target: torch.Tensor, **where: object) -> SolverComparison:
    """The :class:`SolverComparison` row of one estimate against a flat reference g* =
    ``target``; ``where`` sets the row's ``reference``, ``horizon`` and ``fd_correlation``."""
    cosine, error = agreement(estimate.grads, target)
    return SolverComparison(
        estimate.solver,
        estimate.k,
        estimate.hvps,
        cosine,
        error,
        estimate.status,
        time_s=estimate.time_s,
        **where,
    )
