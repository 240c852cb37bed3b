"""The configurations behind ``benchmarks.solvers_in_the_loop --frontier``: each library's own
knobs, swept, every configuration solving the same damped system (H + μI)x = ∂L_v/∂w.

μ = max(0, −λ̂min) + 0.1·λ̂max at the first state (``benchmarks.common.loop_run``), as the loop
benchmark's CG family: H is indefinite at these states, and a Neumann series or CG on H itself
has no solution to converge to. The reference is CG to ‖r‖ ≤ 10⁻⁶‖b‖ on the same system.

* hpo-cli (its own damping): ``Neumann`` with K ∈ ``TERMS`` products and α = auto from 3, 6 or
  10 Lanczos steps (cold), warm (λ̂max refreshed every 10 calls by 3 steps), and with
  ``krylov_series=True`` (max(K, 10) Lanczos steps, no further product); ``ConjugateGradient``
  cold and warm at each tolerance of ``TOLERANCES``.
* torchopt (on the damped product): ``solve_inv(ns=True, maxiter=K, alpha=f/λ̂max)``,
  ``solve_cg(rtol=tol)`` and ``solve_normal_cg(rtol=tol)``.
* curvlinops (on the damped product): ``NeumannInverseLinearOperator(num_terms=K,
  scale=f/λ̂max)`` and ``CGInverseLinearOperator(tolerance=tol)``.
* betty (on the damped loss, L_t + (μ/2)‖w‖²): ``neumann`` with ``neumann_iterations=K``,
  ``neumann_alpha=f/λ̂max``, and ``cg`` with ``cg_iterations=K`` (betty's CG has no tolerance).

The peers' α is a fixed fraction f ∈ ``FRACTIONS`` of 1/λ̂max, λ̂max that of H + μI at the first
state (100 Lanczos steps), as a user would set it once; hpo-cli estimates it at every call.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.common.loop_run import (
    CG_MAX_ITER,
    REFERENCE_ITERATIONS,
    REFERENCE_TOL,
    Family,
    Method,
    State,
    hpo_cli_method,
)
from benchmarks.common.peer_adapters import (
    Counted,
    betty_damped,
    curvlinops_damped,
    torchopt_damped,
)
from hpo_cli import ConjugateGradient, Neumann

WARM_REFRESH_EVERY, KRYLOV_MIN_LANCZOS = 10, 10


@dataclass(frozen=True)
class Grid:
    """The knobs swept: Neumann products K, Lanczos steps of hpo-cli's α = auto, the peers' α
    as fractions of 1/λ̂max, CG's relative tolerances (and betty's CG iterations: ``terms``)."""

    terms: tuple[int, ...] = (1, 2, 3, 5, 10, 20)
    lanczos: tuple[int, ...] = (3, 6, 10)
    fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    tolerances: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


FULL = Grid()
QUICK = Grid(terms=(1, 3, 10), lanczos=(3, 10), fractions=(0.5, 1.0), tolerances=(1e-1, 1e-3))


def library(label: str) -> str:
    """The library of a configuration's label, "library: configuration"."""
    return label.split(":", 1)[0]


def counted(solve: Counted) -> Method:
    def run(state: State) -> tuple[list, int, str, float]:
        grads, products = solve(state)
        return grads, products, "", float("nan")

    return run


def hpo_cli_configs(grid: Grid, damping: float) -> dict[str, Method]:
    methods = {}
    for k in grid.terms:
        for steps in grid.lanczos:
            solver = Neumann(k + 1, lanczos_iterations=steps, damping=damping)
            methods[f"hpo-cli: neumann K={k}, α=auto ({steps} Lanczos), cold"] = solver
        solver = Neumann(k + 1, warm_start=True, refresh_every=WARM_REFRESH_EVERY, damping=damping)
        methods[f"hpo-cli: neumann K={k}, α=auto, warm"] = solver
        steps = max(k, KRYLOV_MIN_LANCZOS)
        solver = Neumann(k + 1, lanczos_iterations=steps, krylov_series=True, damping=damping)
        methods[f"hpo-cli: neumann K={k}, Krylov series ({steps} Lanczos)"] = solver
    for tol in grid.tolerances:
        for warm in (False, True):
            solver = ConjugateGradient(CG_MAX_ITER, tol, damping, warm_start=warm)
            methods[f"hpo-cli: cg tol={tol:g}, {'warm' if warm else 'cold'}"] = solver
    return {label: hpo_cli_method(solver) for label, solver in methods.items()}


def torchopt_configs(grid: Grid, alpha: float, damping: float) -> dict[str, Method]:
    from torchopt import linear_solve

    methods = {}
    for k in grid.terms:
        for f in grid.fractions:
            solve = linear_solve.solve_inv(ns=True, maxiter=k, alpha=f * alpha)
            methods[f"torchopt: solve_inv(ns=True) K={k}, α={f:g}/λ̂max"] = solve
    for tol in grid.tolerances:
        methods[f"torchopt: solve_cg rtol={tol:g}"] = linear_solve.solve_cg(
            maxiter=CG_MAX_ITER, rtol=tol, atol=0.0
        )
        methods[f"torchopt: solve_normal_cg rtol={tol:g}"] = linear_solve.solve_normal_cg(
            maxiter=CG_MAX_ITER, rtol=tol, atol=0.0
        )
    return {label: counted(torchopt_damped(solve, damping)) for label, solve in methods.items()}


def curvlinops_configs(grid: Grid, alpha: float, damping: float) -> dict[str, Method]:
    from curvlinops import CGInverseLinearOperator, NeumannInverseLinearOperator

    methods = {}
    for k in grid.terms:
        for f in grid.fractions:
            methods[f"curvlinops: Neumann num_terms={k}, scale={f:g}/λ̂max"] = curvlinops_damped(
                NeumannInverseLinearOperator, damping, num_terms=k, scale=f * alpha
            )
    for tol in grid.tolerances:
        methods[f"curvlinops: CG tolerance={tol:g}"] = curvlinops_damped(
            CGInverseLinearOperator,
            damping,
            max_iter=CG_MAX_ITER,
            max_tridiag_iter=CG_MAX_ITER,
            tolerance=tol,
        )
    return {label: counted(solve) for label, solve in methods.items()}


def betty_configs(grid: Grid, alpha: float, damping: float) -> dict[str, Method]:
    methods = {}
    for k in grid.terms:
        for f in grid.fractions:
            label = f"betty: neumann iterations={k}, α={f:g}/λ̂max"
            methods[label] = betty_damped("neumann", damping, k, f * alpha)
        methods[f"betty: cg iterations={k}"] = betty_damped("cg", damping, k, 1.0)
    return {label: counted(solve) for label, solve in methods.items()}


def frontier_family(grid: Grid, alpha: float, damping: float, available: set[str]) -> list[Family]:
    """Every configuration of every available library, in one family against the tight CG.

    Args:
        alpha: 1/λ̂max of H at the first state; the peers' α is a fraction of
            1/(λ̂max + μ), that of the damped system.
        damping: μ.
    """
    damped_alpha = 1.0 / (1.0 / alpha + damping)
    methods = hpo_cli_configs(grid, damping)
    if "torchopt" in available:
        methods |= torchopt_configs(grid, damped_alpha, damping)
    if "curvlinops" in available:
        methods |= curvlinops_configs(grid, damped_alpha, damping)
    if "betty" in available:
        methods |= betty_configs(grid, damped_alpha, damping)
    reference = ConjugateGradient(REFERENCE_ITERATIONS, REFERENCE_TOL, damping)
    return [Family("frontier", lambda state: hpo_cli_method(reference), methods)]
