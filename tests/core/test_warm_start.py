"""Warm starts across calls (CG's previous solution, Neumann's kept λ̂max and eigenvector),
carried by the caller in the solver's state: the same answers as cold solves to the solver's
tolerance, fewer products, a safety net, and a state that survives a checkpoint (float64, dense
references)."""

import io

import pytest
import torch

from hpo_cli import ConjugateGradient, Neumann
from hpo_cli.core.solvers import CGState, NeumannState

DT = torch.float64
DIM = 30


def spd_sequence(steps, drift=1e-3, seed=0):
    """SPD matrices A_t and right-hand sides b_t that change a little from one step to the next
    (as H and ∂L_v/∂w do between outer steps), eigenvalues in [0.1, 10]."""
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=gen, dtype=DT))
    eigenvalues = torch.logspace(-1, 1, DIM, dtype=DT)
    b = torch.randn(DIM, generator=gen, dtype=DT)
    for _ in range(steps):
        yield basis @ torch.diag(eigenvalues) @ basis.T, b.clone()
        eigenvalues = eigenvalues * (1 + drift * torch.rand(DIM, generator=gen, dtype=DT))
        b = b + drift * torch.randn(DIM, generator=gen, dtype=DT)
        skew = torch.randn(DIM, DIM, generator=gen, dtype=DT)
        rotation = torch.linalg.matrix_exp(drift / DIM**0.5 * (skew - skew.T) / 2)
        basis = rotation @ basis


class Carried:
    """A solver and the state it hands from one solve to the next, kept as JointOptimizer keeps
    it: ``solve(matvec, b, state) -> (x, info, state)``, the returned state passed back."""

    def __init__(self, solver):
        self.solver, self.state = solver, solver.init_state()

    def __call__(self, matvec, b):
        x, info, self.state = self.solver.solve(matvec, b, self.state)
        return x, info


def solve(solver, matrix, b):
    return solver(lambda v: [matrix @ v[0]], [b])


def relative_error(x, matrix, b):
    exact = torch.linalg.solve(matrix, b)
    return float(torch.linalg.vector_norm(x[0] - exact) / torch.linalg.vector_norm(exact))


def test_warm_cg_matches_cold_to_its_tolerance_with_fewer_products():
    tol = 1e-6
    warm, cold = (
        Carried(ConjugateGradient(max_iter=200, tol=tol, warm_start=True)),
        ConjugateGradient(max_iter=200, tol=tol, warm_start=False),
    )
    warm_products = cold_products = 0
    for step, (matrix, b) in enumerate(spd_sequence(8)):
        x_warm, info_warm = solve(warm, matrix, b)
        x_cold, info_cold = solve(cold, matrix, b)
        assert info_warm.converged and info_cold.converged
        assert info_warm.extras["warm_start"] == float(step > 0)
        # both meet ‖r‖ ≤ tol·‖b‖, so both are within cond(A)·tol of A⁻¹b (cond = 100)
        assert relative_error(x_warm, matrix, b) < 100 * tol
        assert relative_error(x_cold, matrix, b) < 100 * tol
        assert relative_error(x_warm, matrix, torch.as_tensor(matrix @ x_cold[0])) < 200 * tol
        if step > 0:
            warm_products += info_warm.matvecs
            cold_products += info_cold.matvecs
    assert warm_products < 0.8 * cold_products, (warm_products, cold_products)


def test_warm_cg_falls_back_to_a_cold_start_when_the_warm_residual_is_no_smaller():
    matrix = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=DT))
    b = torch.tensor([1.0, 0.0, 0.0], dtype=DT)
    solver = Carried(ConjugateGradient(max_iter=10, tol=1e-12, warm_start=True))
    solver.state = CGState(solution=[torch.tensor([0.0, 1.0, 0.0], dtype=DT)])  # A x ⟂ b
    x, info = solve(solver, matrix, b)
    x_cold, info_cold = solve(
        ConjugateGradient(max_iter=10, tol=1e-12, warm_start=False), matrix, b
    )
    assert info.extras["warm_start"] == 0.0 and info.matvecs == info_cold.matvecs + 1
    assert torch.equal(x[0], x_cold[0])


def test_warm_neumann_matches_cold_to_its_tolerance_with_fewer_products():
    tol = 1e-10
    warm = Carried(Neumann(terms=5001, tol=tol, warm_start=True, refresh_every=4))
    cold = Neumann(terms=5001, tol=tol, warm_start=False)
    warm_products = cold_products = 0
    for matrix, b in spd_sequence(8):
        x_warm, info_warm = solve(warm, matrix, b)
        x_cold, info_cold = solve(cold, matrix, b)
        assert info_warm.converged and info_cold.converged
        # the neglected tail is below tol·‖t_0‖/(1 − ρ) in each, ρ ≤ 1 − λmin/λmax (= 0.99)
        assert relative_error(x_warm, matrix, b) < 1e-6
        assert relative_error(x_cold, matrix, b) < 1e-6
        alphas = info_warm.extras["alpha"], info_cold.extras["alpha"]
        assert alphas[0] == pytest.approx(alphas[1], rel=0.1)
        warm_products += info_warm.matvecs - info_warm.iterations  # Lanczos steps only
        cold_products += info_cold.matvecs - info_cold.iterations
    assert cold_products == 8 * cold.lanczos_iterations
    # a cold estimate and one refresh (k = 4), each with its Ritz vector's m − 1 products
    steps = cold.lanczos_iterations, warm.solver.refresh_iterations
    assert warm_products == sum(2 * m - 1 for m in steps)


def test_a_kept_step_that_diverges_is_refreshed():
    solver = Carried(Neumann(terms=21, warm_start=True, refresh_every=100))
    b = torch.ones(3, dtype=DT)
    _, first = solve(solver, torch.diag(torch.tensor([1.0, 0.5, 0.2], dtype=DT)), b)
    assert first.extras["lambda_max_estimate"] == pytest.approx(1.0, rel=0.05)
    grown = torch.diag(torch.tensor([5.0, 0.5, 0.2], dtype=DT))  # λmax × 5: kept α = 1 diverges
    x, info = solve(solver, grown, b)
    assert not info.diverged and info.extras["warm_retry"] == 1.0
    assert info.extras["lambda_max_estimate"] == pytest.approx(5.0, rel=0.05)
    assert info.matvecs > solver.solver.refresh_iterations + info.iterations  # failed try counts
    x_fixed, _ = solve(Neumann(terms=21, alpha=info.extras["alpha"]), grown, b)
    assert torch.equal(x[0], x_fixed[0]), "the retry is the series with the refreshed α"
    _, again = solve(solver, grown, b)  # the cold estimate is kept for the next call
    assert again.extras["alpha"] == info.extras["alpha"] and again.matvecs == again.iterations


@pytest.mark.parametrize(
    "make",
    [
        lambda: ConjugateGradient(max_iter=50, tol=1e-9, warm_start=True),
        lambda: Neumann(terms=6, warm_start=True, refresh_every=3),
    ],
)
def test_a_restored_state_continues_bit_for_bit(make):
    problems = list(spd_sequence(6))
    original, restored = Carried(make()), Carried(make())
    for matrix, b in problems[:3]:
        solve(original, matrix, b)
    saved = io.BytesIO()  # through a checkpoint's plain values, as hpo-run saves them
    torch.save(original.state.as_dict(), saved)
    saved.seek(0)
    restored.state = type(original.state).from_dict(torch.load(saved, weights_only=True))
    for matrix, b in problems[3:]:
        x, info = solve(original, matrix, b)
        y, other = solve(restored, matrix, b)
        assert torch.equal(x[0], y[0]) and info.matvecs == other.matvecs


def test_a_problem_of_another_shape_starts_cold():
    solver = Carried(ConjugateGradient(max_iter=50, tol=1e-9, warm_start=True))
    matrix, b = next(spd_sequence(1))
    solve(solver, matrix, b)
    _, info = solve(solver, matrix[:5, :5], b[:5])
    assert info.extras["warm_start"] == 0.0


@pytest.mark.parametrize(
    ("solver", "options"),
    [
        ("neumann", ["solver.refresh_every=3"]),
        ("cg", ["solver.damping=1.0"]),
        (
            "cg",
            ["solver.damping=1.0", "solver.preconditioner=hutchinson", "solver.refresh_every=3"],
        ),
    ],
)
def test_a_run_resumed_from_a_checkpoint_with_warm_state_is_bit_exact(solver, options, tmp_path):
    """hpo-run's checkpoint carries the solver's warm state (with CG's Hutchinson diagonal and
    its probes' generator): 2 + 2 outer steps through save_checkpoint / read_checkpoint /
    restore equal 4 uninterrupted ones."""
    from benchmarks.common.run_config import compose_config
    from hpo_cli.runner.config.build import build_experiment
    from hpo_cli.runner.loop.progress import Progress
    from hpo_cli.runner.loop.state import checkpoint_state, restore
    from hpo_cli.runner.loop.train import outer_step
    from hpo_cli.runner.rundir.checkpoint import load_checkpoint, save_checkpoint

    overrides = [
        f"solver={solver}",
        "solver.warm_start=true",
        "inner_steps=3",
        "model.hidden_sizes=[8]",
        *options,
    ]

    def run(steps, exp, progress):
        for _ in range(steps):
            outer_step(exp, progress)
        return exp

    whole = run(4, build_experiment(compose_config(overrides)), Progress())
    first, progress = build_experiment(compose_config(overrides)), Progress()
    run(2, first, progress)
    assert first.joint.method_state_dict(), "the solver kept a warm state"
    save_checkpoint(tmp_path, checkpoint_state(first, progress, 0.0))
    resumed = build_experiment(compose_config(overrides))
    progress = restore(resumed, load_checkpoint(tmp_path))
    run(2, resumed, progress)
    for a, b in zip(whole.hyper.parameters(), resumed.hyper.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ConjugateGradient(max_iter=50, tol=1e-9, warm_start=True),
        lambda: ConjugateGradient(max_iter=5, tol=0.0, preconditioner="hutchinson"),
        lambda: Neumann(terms=6, warm_start=True, refresh_every=3),
    ],
)
def test_solvers_are_stateless_the_state_is_returned_and_never_mutated(make):
    """solve(matvec, b, state) depends on its arguments only: the same state twice gives the same
    answer, the state passed in is left as it was, and passing the returned state back is the
    warm start of the former stateful solvers (a different, warm answer)."""
    solver = make()
    problems = list(spd_sequence(2))
    (a0, b0), (a1, b1) = problems
    matvec0, matvec1 = (lambda v: [a0 @ v[0]]), (lambda v: [a1 @ v[0]])
    initial = solver.init_state()
    assert initial == type(initial)()  # nothing before the first solve
    x, _, state = solver.solve(matvec0, [b0], initial)
    again, _, _ = solver.solve(matvec0, [b0], initial)
    assert torch.equal(x[0], again[0]) and initial == type(initial)()
    assert state != initial and isinstance(state, CGState | NeumannState)
    before = state.as_dict()
    cold, cold_info, _ = solver.solve(matvec1, [b1], initial)
    warm, warm_info, _ = solver.solve(matvec1, [b1], state)
    after = state.as_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():  # solve left the state it was given unchanged
        values = value if isinstance(value, list) else [torch.as_tensor(value)]
        others = after[key] if isinstance(after[key], list) else [torch.as_tensor(after[key])]
        assert all(torch.equal(v, o) for v, o in zip(values, others, strict=True)), key
    assert warm_info.matvecs != cold_info.matvecs or not torch.equal(warm[0], cold[0])
    assert torch.equal(solver(matvec1, [b1])[0][0], cold[0])  # __call__: one cold solve


def test_a_checkpoint_from_before_neumanns_reindexing_is_refused(tmp_path):
    """Format 1 (unmarked) checkpoints of a Neumann run: their terms=K summed K + 1 terms, so a
    resume would silently change the run; refused in one line that says how to translate."""
    from benchmarks.common.run_config import compose_config
    from hpo_cli.runner.config.build import build_experiment
    from hpo_cli.runner.loop.progress import Progress
    from hpo_cli.runner.loop.state import checkpoint_state, restore
    from hpo_cli.runner.rundir.checkpoint import CheckpointError

    overrides = ["solver=neumann", "inner_steps=1", "model.hidden_sizes=[8]"]
    exp = build_experiment(compose_config(overrides))
    state = checkpoint_state(exp, Progress(), 0.0)
    assert state["format"] == 3
    restore(build_experiment(compose_config(overrides)), state)  # today's format resumes
    del state["format"]
    with pytest.raises(CheckpointError, match=r"old terms=K is new terms=K\+1"):
        restore(build_experiment(compose_config(overrides)), state)
    cg = ["solver=cg", *overrides[1:]]  # other solvers' checkpoints are not Neumann's concern
    old_cg = checkpoint_state(build_experiment(compose_config(cg)), Progress(), 0.0)
    del old_cg["format"]
    with pytest.raises(CheckpointError, match=r"predates hpo-cli's renamed keys"):
        restore(build_experiment(compose_config(cg)), old_cg)  # (but format 1 predates renames)
