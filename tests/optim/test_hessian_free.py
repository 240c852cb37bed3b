"""Hessian-free: its CG against dense solves, the optimiser against closed forms, float64."""

from __future__ import annotations

import itertools
import json
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from torch.func import functional_call, hessian, jacrev

from hpo_cli.core.curvature import CURVATURES
from hpo_cli.core.hvp import dense_matrix
from hpo_cli.data import load_digits
from hpo_cli.optim import HessianFree, StopReason, truncated_cg
from hpo_cli.optim.hessian_free import backtrack_iterates
from hpo_cli.optim.local_model import (
    as_evaluation,
    curvature_product,
    empirical_fisher_diagonal,
    loss_and_outputs,
)
from hpo_cli.optim.truncated_cg import CGRun, SavedIterate, save_grid
from hpo_cli.runner.cli.command import train
from hpo_cli.runner.config.build import build
from hpo_cli.runner.config.schemas import register_configs
from hpo_cli.runner.errors import ConfigError
from tests.support.tiny_runs import tiny

DT = torch.float64


def spd_matrix(d: int, condition: float, seed: int = 0) -> torch.Tensor:
    """Q diag(1 .. condition) Qᵀ with a random orthogonal Q."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=DT))
    return q @ torch.diag(torch.logspace(0, math.log10(condition), d, dtype=DT)) @ q.T


def matvec_of(matrix: torch.Tensor):
    return lambda v: [matrix @ v[0]]


def phi(matrix: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> float:
    return float(0.5 * x @ matrix @ x - b @ x)


# ---------------------------------------------------------------- truncated CG
def test_cg_solves_and_reports_the_quadratic_model_at_every_saved_iterate():
    a, b = spd_matrix(50, 1e2), torch.randn(50, dtype=DT)
    run = truncated_cg(matvec_of(a), [b], max_iter=500, progress_tol=0.0, tol=1e-12)
    assert run.stop_reason == StopReason.CONVERGED
    torch.testing.assert_close(run.solution[0], torch.linalg.solve(a, b), rtol=1e-9, atol=1e-10)
    assert [s.iteration for s in run.saved[:-1]] == sorted(save_grid(run.iterations) - {0})
    for saved in run.saved:
        assert saved.model_value == pytest.approx(phi(a, b, saved.x[0]), rel=1e-9, abs=1e-12)
        assert saved.model_value == run.model_values[saved.iteration]
    assert all(later <= earlier + 1e-12 for earlier, later in itertools.pairwise(run.model_values))


def test_save_grid_is_the_ceiling_of_powers_of_1_3():
    assert sorted(save_grid(20)) == [1, 2, 3, 4, 5, 7, 9, 11, 14, 18]


def test_cg_preconditioned_by_the_inverse_matrix_converges_in_one_iteration():
    a = spd_matrix(40, 1e4)
    b = torch.randn(40, dtype=DT, generator=torch.Generator().manual_seed(0))
    inverse = torch.linalg.inv(a)
    run = truncated_cg(
        matvec_of(a), [b], max_iter=50, tol=1e-10, preconditioner=lambda r: [inverse @ r[0]]
    )
    assert run.iterations <= 2 and run.stop_reason == StopReason.CONVERGED
    torch.testing.assert_close(run.solution[0], inverse @ b, rtol=1e-8, atol=1e-10)
    plain = truncated_cg(matvec_of(a), [b], max_iter=50, tol=1e-10)
    assert plain.iterations > 20, "without the preconditioner this system needs far more"


def test_relative_progress_stop_fires_at_the_first_iteration_meeting_martens_criterion():
    a, b = spd_matrix(200, 1e6, seed=1), torch.randn(200, dtype=DT)
    run = truncated_cg(matvec_of(a), [b], max_iter=1000, progress_tol=5e-4)
    assert run.stop_reason == StopReason.PROGRESS

    def met(i: int) -> bool:
        k = max(10, math.ceil(0.1 * i))
        values = run.model_values
        return i > k and values[i] < 0 and (values[i] - values[i - k]) / values[i] < k * 5e-4

    assert met(run.iterations)
    assert not any(met(i) for i in range(1, run.iterations))


def test_cg_stops_before_a_direction_of_negative_curvature():
    a = torch.diag(torch.tensor([-1.0, 2.0], dtype=DT))
    run = truncated_cg(matvec_of(a), [torch.tensor([1.0, 0.0], dtype=DT)], max_iter=10)
    assert run.stop_reason == StopReason.NEGATIVE_CURVATURE
    assert run.iterations == 0 and torch.equal(run.solution[0], torch.zeros(2, dtype=DT))


def test_warm_start_at_the_solution_needs_no_iteration_and_a_bad_one_is_dropped():
    a, b = spd_matrix(30, 10.0), torch.randn(30, dtype=DT)
    solution = torch.linalg.solve(a, b)
    run = truncated_cg(matvec_of(a), [b], [solution], max_iter=100, tol=1e-8)
    assert run.iterations == 0 and run.matvecs == 1
    assert run.model_values[0] == pytest.approx(phi(a, b, solution), rel=1e-12)
    bad = truncated_cg(matvec_of(a), [b], [-2 * solution], max_iter=100, tol=1e-8, progress_tol=0)
    assert bad.model_values[0] == 0.0, "φ(−2x*) = −4 φ(x*) > 0: restarted from zero"
    torch.testing.assert_close(bad.solution[0], solution, rtol=1e-6, atol=1e-8)


def test_backtracking_walks_back_while_the_objective_decreases():
    run = CGRun(
        saved=[SavedIterate(i, [torch.tensor([float(i)])], -1.0) for i in (1, 2, 3, 4)],
        model_values=[],
        iterations=4,
        matvecs=4,
        stop_reason=StopReason.MAX_ITERATIONS,
    )
    for values, expected in (({1: 5, 2: 3, 3: 4, 4: 6}, 2), ({1: 1, 2: 3, 3: 2, 4: 6}, 3)):
        chosen, loss, evaluations = backtrack_iterates(
            run, lambda x, t, values=values: values[int(x[0])], enabled=True
        )
        assert (chosen.iteration, loss) == (expected, values[expected])
        assert evaluations == 5 - expected + (expected > 1)  # the chosen, the later, one before
    chosen, _, evaluations = backtrack_iterates(run, lambda x, t: 0.0, enabled=False)
    assert (chosen.iteration, evaluations) == (4, 1)


# ---------------------------------------------------------------- the optimiser on closed forms
@pytest.mark.parametrize("d", [50, 200])
@pytest.mark.parametrize("curvature", ["hessian", "ggn"])
def test_one_undamped_step_lands_on_the_minimiser_of_a_quadratic(d, curvature):
    a = spd_matrix(d, 1e3, seed=d)
    b = torch.randn(d, dtype=DT, generator=torch.Generator().manual_seed(d))
    w = torch.zeros(d, dtype=DT, requires_grad=True)
    optimizer = HessianFree(
        [w],
        curvature=curvature,
        damping=0.0,
        adapt_damping=False,
        cg_max_iter=5 * d,
        cg_progress_tol=0.0,
        preconditioner=False,
    )

    def closure():
        z = 1.0 * w  # outputs z = w: J = I and H_z = A, so the Gauss-Newton matrix is A
        return 0.5 * z @ a @ z - b @ z, z

    optimizer.step(closure)
    torch.testing.assert_close(w.detach(), torch.linalg.solve(a, b), rtol=1e-7, atol=1e-9)
    assert optimizer.last_step.line_search_step == 1.0
    assert optimizer.last_step.cg_stop_reason == StopReason.CONVERGED


def test_rosenbrock_from_minus_one_three_with_the_hessian():
    w = torch.tensor([-1.0, 3.0], dtype=DT, requires_grad=True)
    optimizer = HessianFree([w], curvature="hessian", preconditioner=False)

    def closure():
        return (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2

    for _ in range(60):
        optimizer.step(closure)
    torch.testing.assert_close(w.detach(), torch.ones(2, dtype=DT), rtol=0, atol=1e-6)


def one_dimensional_step(f, x0: float, damping: float, **options):
    w = torch.tensor([x0], dtype=DT, requires_grad=True)
    optimizer = HessianFree(
        [w], curvature="hessian", damping=damping, preconditioner=False, **options
    )
    optimizer.step(lambda: f(w).sum())
    return w, optimizer


def test_reduction_ratio_and_levenberg_marquardt_drop_on_a_quartic():
    """f = x⁴ at 1: g = 4, h = 12, p = −4/13; ρ = (f(1 + p) − 1)/(g p + ½ h p²) > ¾."""
    w, optimizer = one_dimensional_step(lambda x: x**4, 1.0, damping=1.0)
    p = -4 / 13
    rho = ((1 + p) ** 4 - 1) / (4 * p + 6 * p**2)
    step = optimizer.last_step
    assert step.reduction_ratio == pytest.approx(rho, rel=1e-12)
    assert (step.damping, step.next_damping) == (1.0, pytest.approx(2 / 3))
    assert float(w.detach()) == pytest.approx(1 + p, rel=1e-12)


def test_bad_model_boosts_damping_and_the_armijo_search_shrinks_the_step():
    """f = √(1 + x²) at 2: the Newton step overshoots to −8 (ρ < 0)."""
    x0, damping = 2.0, 0.01
    g, h = x0 / math.sqrt(1 + x0**2), (1 + x0**2) ** -1.5
    p = -g / (h + damping)

    def f(x):
        return (1 + x**2) ** 0.5

    w, optimizer = one_dimensional_step(f, x0, damping)
    value = lambda x: math.sqrt(1 + x**2)  # noqa: E731
    rho = (value(x0 + p) - value(x0)) / (g * p + 0.5 * h * p**2)
    t = 1.0
    while value(x0 + t * p) > value(x0) + 1e-2 * t * g * p:
        t *= 0.8
    step = optimizer.last_step
    assert step.reduction_ratio == pytest.approx(rho, rel=1e-10) and rho < 0.25
    assert step.next_damping == pytest.approx(1.5 * damping)
    assert step.line_search_step == pytest.approx(t) and t < 1
    assert float(w.detach()) == pytest.approx(x0 + t * p, rel=1e-12)
    assert step.new_loss == pytest.approx(value(x0 + t * p), rel=1e-12)
    _, fixed = one_dimensional_step(f, x0, damping, adapt_damping=False)
    assert fixed.last_step.next_damping == damping and fixed.damping == damping


# ---------------------------------------------------------------- curvature and preconditioner
def small_problem(n: int = 9, seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4))
    model = model.to(DT)
    inputs, labels = torch.randn(n, 3, dtype=DT), torch.randint(0, 4, (n,))
    return model, inputs, labels


def test_gauss_newton_path_equals_dense_jt_h_j_and_hessian_path_the_dense_hessian():
    model, inputs, labels = small_problem()
    params = list(model.parameters())
    names = [name for name, _ in model.named_parameters()]

    def outputs_of(*weights):
        return functional_call(model, dict(zip(names, weights, strict=True)), (inputs,))

    def loss_of_outputs(flat):
        return F.cross_entropy(flat.reshape(len(labels), 4), labels)

    detached = [p.detach() for p in params]
    jacobian = torch.cat(
        [j.reshape(36, -1) for j in jacrev(outputs_of, argnums=tuple(range(4)))(*detached)], 1
    )
    output_hessian = hessian(loss_of_outputs)(outputs_of(*detached).reshape(-1))
    outputs = model(inputs)
    evaluation = as_evaluation((F.cross_entropy(outputs, labels), outputs))
    ggn = dense_matrix(curvature_product("ggn", evaluation, params), params)
    torch.testing.assert_close(ggn, jacobian.T @ output_hessian @ jacobian, rtol=1e-10, atol=1e-12)

    def flat_loss(flat):
        shaped = [
            c.view_as(p)
            for c, p in zip(flat.split([p.numel() for p in params]), params, strict=True)
        ]
        return loss_of_outputs(outputs_of(*shaped).reshape(-1))

    dense_hessian = hessian(flat_loss)(torch.cat([p.reshape(-1) for p in detached]))
    hvp_matrix = dense_matrix(curvature_product("hessian", evaluation, params), params)
    torch.testing.assert_close(hvp_matrix, dense_hessian, rtol=1e-10, atol=1e-12)


def test_empirical_fisher_diagonal_is_the_mean_of_squared_per_example_gradients():
    model, inputs, labels = small_problem(n=70)  # more than one chunk of 32
    params = list(model.parameters())
    outputs = model(inputs)
    fisher = empirical_fisher_diagonal(
        as_evaluation((F.cross_entropy(outputs, labels), outputs)), params
    )
    expected = [torch.zeros_like(p) for p in params]
    for i in range(len(labels)):
        grads = torch.autograd.grad(
            F.cross_entropy(model(inputs[i : i + 1]), labels[i : i + 1]), params
        )
        expected = [e + g.square() / len(labels) for e, g in zip(expected, grads, strict=True)]
    for got, want in zip(fisher, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-14)


def mlp_step(**options) -> list[torch.Tensor]:
    model, inputs, labels = small_problem(n=40, seed=3)
    optimizer = HessianFree(model.parameters(), damping=1e-3, cg_max_iter=4, **options)

    def closure():
        outputs = model(inputs)
        return F.cross_entropy(outputs, labels), outputs

    optimizer.step(closure)
    return [p.detach() for p in model.parameters()]


def test_the_preconditioner_changes_the_cg_iterates_and_its_exponent_is_applied():
    plain = mlp_step(preconditioner=False, backtrack=False, line_search=False)
    exponent_zero = mlp_step(preconditioner_exponent=0.0, backtrack=False, line_search=False)
    preconditioned = mlp_step(backtrack=False, line_search=False)
    for a, b in zip(plain, exponent_zero, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)  # M = (F + λ)⁰ = I
    difference = sum(float((a - b).abs().max()) for a, b in zip(plain, preconditioned, strict=True))
    assert difference > 1e-3


# ---------------------------------------------------------------- accumulation, state, errors
def test_accumulated_step_over_unequal_batches_equals_the_full_batch_step():
    model, inputs, labels = small_problem(n=30, seed=4)
    penalty_weight = 1e-2
    initial = [p.detach().clone() for p in model.parameters()]

    def closure_for(index):
        def closure():
            outputs = model(inputs[index])
            penalty = penalty_weight * sum(p.square().sum() for p in model.parameters())
            return F.cross_entropy(outputs, labels[index]) + penalty, outputs

        return closure

    full = closure_for(slice(None))
    loss_batches = [closure_for(slice(a, b)) for a, b in ((0, 10), (10, 18), (18, 30))]
    curvature_batches = [closure_for(slice(a, b)) for a, b in ((0, 21), (21, 30))]
    results = []
    for accumulate in (False, True):
        with torch.no_grad():
            for p, w in zip(model.parameters(), initial, strict=True):
                p.copy_(w)
        optimizer = HessianFree(model.parameters(), damping=0.3, cg_max_iter=15)
        steps = []
        for _ in range(2):  # the second step also checks the warm start and the new damping
            if accumulate:
                optimizer.step_accumulated(loss_batches, curvature_batches)
            else:
                optimizer.step(full)
            steps.append(optimizer.last_step)
        results.append(([p.detach().clone() for p in model.parameters()], steps))
    (full_params, full_steps), (accumulated_params, accumulated_steps) = results
    for a, b in zip(full_params, accumulated_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    for a, b in zip(full_steps, accumulated_steps, strict=True):
        assert (a.cg_iterations, a.backtrack_iteration) == (b.cg_iterations, b.backtrack_iteration)
        assert a.loss == pytest.approx(b.loss, rel=1e-12)
        assert a.next_damping == pytest.approx(b.next_damping, rel=1e-12)


def test_state_dict_round_trip_reproduces_the_next_step():
    model, inputs, labels = small_problem(n=20, seed=5)

    def closure():
        outputs = model(inputs)
        return F.cross_entropy(outputs, labels), outputs

    optimizer = HessianFree(model.parameters(), cg_max_iter=10)
    optimizer.step(closure)
    saved_weights = [p.detach().clone() for p in model.parameters()]
    restored = HessianFree(model.parameters(), cg_max_iter=10)
    restored.load_state_dict(optimizer.state_dict())
    assert restored.damping == optimizer.damping != 1.0
    optimizer.step(closure)
    expected = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p, w in zip(model.parameters(), saved_weights, strict=True):
            p.copy_(w)
    restored.step(closure)
    for a, b in zip(model.parameters(), expected, strict=True):
        assert torch.equal(a.detach(), b)


def test_bad_input_fails_in_one_line_naming_the_parameter():
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="damping=-1"):
        HessianFree([w], damping=-1)
    with pytest.raises(ValueError, match="curvature='newton'"):
        HessianFree([w], curvature="newton")
    with pytest.raises(ValueError, match="curvature='gauss_newton' is now spelled 'ggn'"):
        HessianFree([w], curvature="gauss_newton")
    with pytest.raises(ValueError, match="curvature='gauss_newton' is now spelled 'ggn'"):
        curvature_product("gauss_newton", (w.square().sum(), w * 1.0), [w])
    with pytest.raises(ValueError, match="warm_start_decay"):
        HessianFree([w], warm_start_decay=1.5)
    optimizer = HessianFree([w])
    with pytest.raises(
        ValueError, match=r"curvature='ggn' needs the closure to return \(loss, outputs\)"
    ):
        HessianFree([w], preconditioner=False).step(lambda: w.square().sum())
    with pytest.raises(ValueError, match="Fisher preconditioner needs"):
        optimizer.step(lambda: w.square().sum())
    with pytest.raises(ValueError, match="no autograd graph"):
        optimizer.step(lambda: w.detach().square().sum())
    model = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match="2 times"):
        loss_and_outputs(
            model, lambda: model(torch.ones(1, 2)).sum() + model(torch.ones(1, 2)).sum()
        )


# ---------------------------------------------------------------- training
def test_hessian_free_lowers_the_training_loss_faster_per_epoch_than_sgd():
    data = load_digits(train_size=300, val_size=10, test_size=10, seed=0)
    inputs, labels = data.train.inputs.reshape(300, -1).to(DT), data.train.targets

    def fresh_model():
        torch.manual_seed(0)
        layers = [torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10)]
        return torch.nn.Sequential(*layers).to(DT)

    def train_for_three_epochs(make_optimizer, batch, hessian_free):
        model = fresh_model()
        optimizer = make_optimizer(model.parameters())
        order = torch.Generator().manual_seed(0)
        for _ in range(3):
            for index in torch.randperm(300, generator=order).split(batch):
                if hessian_free:

                    def closure(index=index):
                        outputs = model(inputs[index])
                        return F.cross_entropy(outputs, labels[index]), outputs

                    optimizer.step(closure)
                else:
                    optimizer.zero_grad()
                    F.cross_entropy(model(inputs[index]), labels[index]).backward()
                    optimizer.step()
        with torch.no_grad():
            return float(F.cross_entropy(model(inputs), labels))

    hf = train_for_three_epochs(lambda p: HessianFree(p, damping=0.1), 100, True)
    sgd = min(
        train_for_three_epochs(lambda p, lr=lr: torch.optim.SGD(p, lr=lr, momentum=0.9), 32, False)
        for lr in (0.1, 0.3)
    )
    assert hf < 0.5 * sgd, (hf, sgd)


def test_the_config_spells_the_curvature_ggn_and_the_old_spelling_names_the_new():
    register_configs()
    with initialize_config_module("hpo_cli.conf", version_base="1.3"):
        cfg = compose("config", overrides=["optimizer=hessian_free"])
        assert cfg.optimizer.curvature == "ggn" and "ggn" in CURVATURES
        old = compose("config", ["optimizer=hessian_free", "optimizer.curvature=gauss_newton"])
    w = torch.zeros(2, requires_grad=True)
    assert build(cfg.optimizer, [w]).param_groups[0]["curvature"] == "ggn"
    with pytest.raises(ConfigError) as raised:
        build(old.optimizer, [w])
    assert str(raised.value) == "HessianFree: curvature='gauss_newton' is now spelled 'ggn'"


def test_hpo_run_with_the_hessian_free_inner_optimizer(tmp_path):
    register_configs()
    overrides = [
        *tiny("outer_steps=3", "inner_steps=3", "warmup_inner_steps=0"),
        "optimizer=hessian_free",
        "optimizer.cg_max_iter=20",
    ]
    with initialize_config_module("hpo_cli.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    train(cfg, tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics["outer_step"]) == [0, 1, 2, 3]
    assert metrics["train_loss"].iloc[-1] < 0.5 * metrics["train_loss"].iloc[0]
    logged = json.loads(metrics["inner_optimizer_state"].iloc[-1])
    assert {"damping", "cg_iterations", "cg_stop_reason", "line_search_step"} <= set(logged)
    assert logged["cg_iterations"] >= 1
