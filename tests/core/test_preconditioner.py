"""Preconditioned CG (``ConjugateGradient(preconditioner=...)``) and its diagonal preconditioners
(:mod:`hpo_cli.core.solvers.diagonal`): against dense solves and dense Hessians, in float64."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from hpo_cli import ConjugateGradient
from hpo_cli.core.hvp import TrainingCurvature, dense_matrix
from hpo_cli.core.solvers import CGState
from hpo_cli.core.solvers.diagonal import hutchinson_diagonal, second_moment_diagonal, spd_diagonal
from tests.support.cli_runs import hpo_run
from tests.support.tiny_runs import TINY

DT = torch.float64


def dominant(dim=60, spread=4.0, coupling=0.2, seed=0):
    """An SPD matrix with diagonal 10^(0..spread) plus a symmetric coupling of norm ≈
    ``coupling`` (below the smallest diagonal entry 1, so diagonally dominant): condition
    number ≈ 10^spread, whose diagonal is nearly all of it."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(dim, dim, generator=gen, dtype=DT)
    coupling_matrix = coupling * (noise + noise.T) / (2 * dim**0.5)
    return torch.diag(torch.logspace(0, spread, dim, dtype=DT)) + coupling_matrix


def rhs(dim, seed=1):
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=DT)


def product(matrix):
    return lambda v: [matrix @ v[0]]


def test_pcg_with_the_exact_diagonal_matches_a_dense_solve():
    matrix, b = dominant(), rhs(60)
    exact = torch.linalg.solve(matrix, b)
    jacobi = ConjugateGradient(
        max_iter=200, tol=1e-14, preconditioner=lambda r: [r[0] / matrix.diag()]
    )
    x, info = jacobi(product(matrix), [b])
    assert info.converged
    torch.testing.assert_close(x[0], exact, rtol=1e-10, atol=1e-12)
    # Hutchinson is exact on a diagonal matrix with one probe: z ⊙ Dz = diag(D)
    diagonal = torch.diag(torch.logspace(0, 3, 60, dtype=DT))  # its floor 0.15 < 1: no clamp
    solver = ConjugateGradient(max_iter=5, tol=1e-14, preconditioner="hutchinson", probes=1)
    x, info = solver(product(diagonal), [b])
    torch.testing.assert_close(x[0], b / diagonal.diag(), rtol=1e-12, atol=0)
    assert info.iterations == 1 and info.matvecs == 2  # one probe, one iteration


def test_pcg_takes_far_fewer_iterations_than_cg_on_a_badly_scaled_matrix():
    matrix, b = dominant(), rhs(60)
    _, plain_info = ConjugateGradient(max_iter=500, tol=1e-8)(product(matrix), [b])
    pcg = ConjugateGradient(max_iter=500, tol=1e-8, preconditioner="hutchinson", probes=8)
    x, info = pcg(product(matrix), [b])
    assert plain_info.converged and info.converged
    assert 4 * info.iterations <= plain_info.iterations, (info.iterations, plain_info.iterations)
    assert info.matvecs == info.iterations + 8  # the probes are counted
    assert info.extras["preconditioner_products"] == 8
    exact = torch.linalg.solve(matrix, b)
    assert torch.linalg.vector_norm(x[0] - exact) <= 1e-6 * torch.linalg.vector_norm(exact)


def small_mlp_hessian():
    """The training loss of a 4-5-3 tanh MLP on 16 points: its HVP and dense Hessian (d = 43)."""
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    model = model.to(DT)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=DT))
    inputs = torch.randn(16, 4, generator=gen, dtype=DT)
    targets = torch.randint(0, 3, (16,), generator=gen)
    loss = torch.nn.functional.cross_entropy(model(inputs), targets)
    params = list(model.parameters())
    curvature = TrainingCurvature(loss, params)
    return curvature.hvp, params, dense_matrix(curvature.hvp, params)


def test_hutchinson_diagonal_converges_to_the_dense_hessian_diagonal():
    hvp, params, hessian = small_mlp_hessian()
    truth = hessian.diag()
    errors = []
    for probes in (4, 64, 1024):
        generator = torch.Generator().manual_seed(0)
        estimate = hutchinson_diagonal(hvp, params, probes, generator)
        flat = torch.cat([e.reshape(-1) for e in estimate])
        errors.append(
            float(torch.linalg.vector_norm(flat - truth) / torch.linalg.vector_norm(truth))
        )
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.15, errors  # ≈ errors[0]·√(4/1024), Monte Carlo rate


def test_non_positive_diagonal_entries_give_an_spd_preconditioner():
    d = [torch.tensor([-3.0, 0.0, 2.0, -1e-9], dtype=DT)]
    (m,) = spd_diagonal(d)
    floor = 1e-3 * (3.0 + 2.0 + 1e-9) / 4
    torch.testing.assert_close(m, torch.tensor([3.0, floor, 2.0, floor], dtype=DT))
    (shifted,) = spd_diagonal(d, shift=0.5)
    assert bool((shifted >= 0.5).all())
    (zero,) = spd_diagonal([torch.zeros(3, dtype=DT)])
    assert torch.equal(zero, torch.ones(3, dtype=DT))  # M = I
    # an indefinite matrix with a negative diagonal entry: M stays positive
    indefinite = torch.diag(torch.tensor([4.0, -2.0, 1.0, 3.0], dtype=DT))
    solver = ConjugateGradient(max_iter=10, preconditioner="hutchinson", probes=1)
    _, _, state = solver.solve(product(indefinite), [torch.ones(4, dtype=DT)], solver.init_state())
    (diagonal,) = state.diagonal
    assert torch.equal(diagonal, torch.tensor([4.0, 2.0, 1.0, 3.0], dtype=DT))


def drifting_systems(steps, dim=40, seed=0):
    """A slowly changing SPD system, as from one outer step to the next."""
    base, gen = dominant(dim, spread=3.0, seed=seed), torch.Generator().manual_seed(seed + 7)
    b = rhs(dim, seed)
    for _ in range(steps):
        noise = torch.randn(dim, dim, generator=gen, dtype=DT)
        base = base + 0.01 * (noise + noise.T) / dim**0.5
        b = b + 0.05 * torch.randn(dim, generator=gen, dtype=DT)
        yield base.clone(), b.clone()


def test_warm_start_with_a_preconditioner_matches_a_tight_solve_to_the_tolerance():
    tol = 1e-8
    solver = ConjugateGradient(
        max_iter=200, tol=tol, warm_start=True, preconditioner="hutchinson", refresh_every=3
    )
    warm_seen, state = 0, solver.init_state()
    for matrix, b in drifting_systems(6):
        x, info, state = solver.solve(product(matrix), [b], state)
        warm_seen += info.extras["warm_start"] == 1.0
        residual = torch.linalg.vector_norm(matrix @ x[0] - b) / torch.linalg.vector_norm(b)
        assert info.converged and residual <= 2 * tol
        exact = torch.linalg.solve(matrix, b)
        condition = float(torch.linalg.cond(matrix))
        error = torch.linalg.vector_norm(x[0] - exact) / torch.linalg.vector_norm(exact)
        assert error <= 2 * condition * tol
    assert warm_seen >= 4, "the warm start was used"


def test_refresh_schedule_and_state_round_trip_are_bit_exact():
    def make():
        return ConjugateGradient(
            max_iter=30,
            tol=1e-10,
            warm_start=True,
            preconditioner="hutchinson",
            probes=3,
            refresh_every=2,
        )

    systems = list(drifting_systems(5))
    solver, products = make(), []
    state = solver.init_state()
    outputs = []
    for matrix, b in systems:
        x, info, state = solver.solve(product(matrix), [b], state)
        outputs.append(x[0])
        products.append(info.extras["preconditioner_products"])
    assert products == [3, 0, 3, 0, 3]  # estimated every 2 calls
    first = make()
    state = first.init_state()
    for matrix, b in systems[:3]:
        _, _, state = first.solve(product(matrix), [b], state)
    saved = state.as_dict()
    saved["diagonal"][0].zero_()  # a copy: the state itself is untouched
    resumed = make()
    state = CGState.from_dict(state.as_dict())
    for (matrix, b), expected in zip(systems[3:], outputs[3:], strict=True):
        x, _, state = resumed.solve(product(matrix), [b], state)
        assert torch.equal(x[0], expected)


def test_adam_preconditioner_reads_the_optimizer_second_moments():
    hvp, params, _ = small_mlp_hessian()
    b = [torch.ones_like(p) for p in params]
    solver = ConjugateGradient(max_iter=20, tol=1e-10, damping=1.0, preconditioner="adam")
    leaves = [p.detach().clone().requires_grad_() for p in params]  # the optimiser's weights
    optimizer = torch.optim.Adam(leaves, lr=1e-3, eps=1e-8)
    assert solver.reads_second_moments
    moments = second_moment_diagonal(optimizer, leaves)
    assert moments is None  # no step yet
    _, info, _ = solver.solve(hvp, b, solver.init_state(), second_moments=moments)
    assert info.extras["preconditioned"] == 0.0  # plain CG
    for _ in range(3):
        optimizer.zero_grad()
        for p in leaves:
            p.grad = torch.randn_like(p)
        optimizer.step()
    diagonal = [(optimizer.state[p]["exp_avg_sq"] / (1 - 0.999**3)).sqrt() + 1e-8 for p in leaves]
    m = spd_diagonal(diagonal)
    by_hand = ConjugateGradient(
        max_iter=20,
        tol=1e-10,
        damping=1.0,
        preconditioner=lambda r: [x / d for x, d in zip(r, m, strict=True)],
    )
    moments = second_moment_diagonal(optimizer, leaves)
    x, info, _ = solver.solve(hvp, b, solver.init_state(), second_moments=moments)
    expected, _ = by_hand(hvp, b)
    assert info.extras["preconditioned"] == 1.0
    for got, want in zip(x, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_an_unknown_preconditioner_is_refused_in_one_line():
    with pytest.raises(ValueError, match="preconditioner must be one of none, hutchinson, adam"):
        ConjugateGradient(preconditioner="jacobi")
    with pytest.raises(ValueError, match="probes must be >= 1"):
        ConjugateGradient(probes=0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["solver.preconditioner=jacobi"], "cg.preconditioner must be one of"),
        (["solver.preconditioner=adam", "optimizer=sgd"], "solver.preconditioner=adam is invalid"),
    ],
)
def test_the_runner_refuses_a_bad_preconditioner(tmp_path, overrides, message):
    result = hpo_run(tmp_path, "solver=cg", *overrides, *TINY)
    assert result.returncode == 2 and message in result.stderr, result.stderr


@pytest.mark.parametrize("name", ["hutchinson", "adam"])
def test_a_preconditioned_cg_run_completes(tmp_path, name):
    result = hpo_run(
        tmp_path, "solver=cg", f"solver.preconditioner={name}", "solver.damping=1.0", *TINY
    )
    assert result.returncode == 0, result.stderr
    steps = pd.read_csv(tmp_path / "metrics.csv").dropna(subset=["solver_hvps"])
    assert len(steps) == 4 and (steps["solver_status"] != "diverged").all()
    probes = [4, 0, 0, 0] if name == "hutchinson" else [0] * 4  # estimated every 10 calls
    # products: the iterations, the probes and the runner's one-product residual check
    assert list(steps["solver_hvps"]) == list(steps["solver_iterations"] + probes + 1)
