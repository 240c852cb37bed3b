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
``solver_comparison.csv``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from hpo_cli.core.hvp import TrainingCurvature, dense_matrix
from hpo_cli.core.hypergradient import hypergradient
from hpo_cli.core.solvers import ConjugateGradient, Exact, Identity, InverseHVPSolver, Neumann
from hpo_cli.core.vectors import flatten

Losses = Callable[[], tuple[torch.Tensor, torch.Tensor]]
"""Builds (L_t, L_v) with fresh autograd graphs, at the current weights and λ."""

SOLVER_FAMILIES = ("identity", "neumann", "cg")
"""The solvers :func:`budget_sweep` knows; ``identity`` costs no products, so it has no K."""


@dataclass(frozen=True)
class Candidate:
    """One solver to compare: its family name, its budget K and the solver itself."""

    name: str
    k: int
    solver: InverseHVPSolver


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
    """

    solver: str
    k: int
    hvps: int
    cosine: float
    rel_error: float
    status: str


def budget_sweep(names: Sequence[str], budget: int, alpha: float | None) -> list[Candidate]:
    """The candidates of the paper's comparison, for K = 0..``budget``.

    Args:
        names: solver families among :data:`SOLVER_FAMILIES`.
        budget: the largest K.
        alpha: Neumann's fixed step α (0 < α < 2/λmax for convergence; :func:`neumann_step`
            is the usual choice), so that K terms cost exactly K products; unused without
            ``neumann``.

    Returns:
        ``Neumann(terms=K, alpha)`` and ``ConjugateGradient(max_iter=K, tol=0)`` (K full steps,
        no early stop) for every K; ``Identity()`` once, with K = 0.
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
        for k in range(budget + 1):
            if name == "neumann":
                candidates.append(Candidate(name, k, Neumann(terms=k, alpha=alpha)))
            elif name == "cg":
                candidates.append(Candidate(name, k, ConjugateGradient(max_iter=k, tol=0.0)))
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


def compare_hypergradients(
    losses: Losses,
    params: Sequence[torch.Tensor],
    hparams: Sequence[torch.Tensor],
    candidates: Sequence[Candidate],
    reference: InverseHVPSolver | None = None,
) -> list[SolverComparison]:
    """Each candidate's hypergradient against the reference's, by cosine and relative error.

    Args:
        losses: builds the scalar L_t(w, λ) and L_v(w, λ) with their graphs; called once per
            solve, since :func:`hpo_cli.core.hypergradient` may free the graphs it differentiates.
        params: the weights w (d entries in all).
        hparams: the hyperparameters λ (p entries).
        candidates: the solvers to compare, e.g. :func:`budget_sweep`.
        reference: the solver of g*; default ``Exact(method="pinv")``, the dense H⁺b, which is
            H⁻¹b when H is invertible and still defined when it is not.

    Returns:
        One :class:`SolverComparison` for g* itself (``exact``: cosine 1, error 0), then one
        per candidate, in order.
    """
    params, hparams = list(params), list(hparams)

    def solve(solver: InverseHVPSolver) -> tuple[torch.Tensor | None, int, str]:
        train_loss, val_loss = losses()
        result = hypergradient(
            train_loss,
            val_loss,
            params,
            hparams,
            solver,
            check_residual=False,
            raise_on_failure=False,
        )
        grads = None if result.failure else flatten(result.grads).detach()
        return grads, result.hvps, result.solve.status

    exact, exact_hvps, exact_status = solve(reference or Exact(method="pinv"))
    if exact is None:
        raise ValueError(f"the reference solve failed ({exact_status})")
    exact_norm = float(exact.norm())
    rows = [SolverComparison("exact", exact_hvps, exact_hvps, 1.0, 0.0, exact_status)]
    for candidate in candidates:
        estimate, hvps, status = solve(candidate.solver)
        cosine = error = math.nan
        if estimate is not None:
            norms = float(estimate.norm()) * exact_norm
            cosine = float(estimate @ exact) / norms if norms > 0 else 0.0
            error = float((estimate - exact).norm()) / exact_norm if exact_norm > 0 else math.nan
        rows.append(SolverComparison(candidate.name, candidate.k, hvps, cosine, error, status))
    return rows
