"""Hypergradients of a small non-convex MLP against finite differences (float64).

A 3→6→3 tanh network with cross-entropy and an L2 penalty of strength λ = exp(θ) (one θ, or one
per layer). The inner problem is solved to a gradient norm ~1e-13 by damped Newton with the dense
Hessian from ``torch.autograd.functional.hessian``; the reference hypergradient is the central
difference of L_v(w*(θ)) with w*(θ ± h) re-solved from the same start.
"""

import pytest
import torch
import torch.nn.functional as F

from hpo_cli import ConjugateGradient, Exact, hypergradient

DT = torch.float64
SHAPES = [(6, 3), (6,), (3, 6), (3,)]
LAYER_OF = [0, 0, 1, 1]  # W1, b1 → layer 0; W2, b2 → layer 1
NUM_WEIGHTS = sum(torch.Size(s).numel() for s in SHAPES)
THETA = {"scalar": [-3.0], "per_layer": [-3.5, -2.5]}


def make_data():
    gen = torch.Generator().manual_seed(1)
    teacher = torch.randn(3, 3, generator=gen, dtype=DT)

    def sample(count):
        x = torch.randn(count, 3, generator=gen, dtype=DT)
        noisy = x @ teacher + 0.7 * torch.randn(count, 3, generator=gen, dtype=DT)
        return x, noisy.argmax(dim=1)

    x_train, y_train = sample(40)
    x_val, y_val = sample(30)
    start = 0.5 * torch.randn(NUM_WEIGHTS, generator=gen, dtype=DT)
    return x_train, y_train, x_val, y_val, start


X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, START = make_data()


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Dense 45×45 Hessians are too small to gain from threads, and OpenMP barriers make them
    many times slower on a loaded 2-core machine; restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def unpack(flat):
    sizes = [torch.Size(s).numel() for s in SHAPES]
    return [chunk.reshape(s) for chunk, s in zip(flat.split(sizes), SHAPES, strict=True)]


def logits(params, x):
    w1, b1, w2, b2 = params
    return torch.tanh(x @ w1.T + b1) @ w2.T + b2


def strengths(theta):
    """λ per layer: exp(θ), one shared θ broadcast to both layers in the scalar case."""
    return torch.exp(theta).expand(2)


def train_loss(params, theta):
    lam = strengths(theta)
    penalty = sum(lam[layer] * (p**2).sum() for p, layer in zip(params, LAYER_OF, strict=True))
    return F.cross_entropy(logits(params, X_TRAIN), Y_TRAIN) + penalty


def val_loss(params):
    return F.cross_entropy(logits(params, X_VAL), Y_VAL)


def flat_train_loss(theta):
    return lambda flat: train_loss(unpack(flat), theta)


def dense_hessian(flat, theta):
    return torch.autograd.functional.hessian(flat_train_loss(theta), flat)


def newton_solve(theta, start, grad_tol=1e-13, max_steps=100):
    """Damped Newton (shifted Hessian where it is not positive definite, Armijo backtracking)."""
    f = flat_train_loss(theta)
    w = start.clone()
    for _ in range(max_steps):
        w_leaf = w.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(f(w_leaf), [w_leaf])
        if float(grad.norm()) < grad_tol:
            return w
        hess = dense_hessian(w, theta)
        smallest = float(torch.linalg.eigvalsh(hess)[0])
        if smallest < 1e-6:
            hess = hess + (1e-3 - smallest) * torch.eye(NUM_WEIGHTS, dtype=DT)
        step = torch.linalg.solve(hess, grad)
        t, value, slope = 1.0, float(f(w)), float(grad @ step)
        # Near a positive-definite minimum take full steps (loss differences fall below round-off
        # long before the gradient does); elsewhere backtrack until the loss decreases enough.
        near_minimum = smallest >= 1e-6 and float(grad.norm()) < 1e-6
        while not near_minimum and float(f(w - t * step)) > value - 1e-4 * t * slope:
            t /= 2
        w = w - t * step
    raise AssertionError(f"Newton did not reach ‖g‖ < {grad_tol:g}")


def reference_val_loss(theta, start):
    return float(val_loss(unpack(newton_solve(theta, start))))


def central_difference(theta, w_star, step=1e-4):
    grads = torch.zeros_like(theta)
    for i in range(theta.numel()):
        shift = torch.zeros_like(theta)
        shift.view(-1)[i] = step
        grads.view(-1)[i] = (
            reference_val_loss(theta + shift, w_star) - reference_val_loss(theta - shift, w_star)
        ) / (2 * step)
    return grads


def run(flat_weights, theta_values, solver, **kwargs):
    params = [p.clone().requires_grad_(True) for p in unpack(flat_weights)]
    theta = theta_values.clone().requires_grad_(True)
    return hypergradient(
        train_loss(params, theta), val_loss(params), params, [theta], solver, **kwargs
    )


def dense_reference(flat_weights, theta_values, damping=0.0):
    """direct − Mᵀ (H + μI)⁻¹ b from the dense Hessian of L_t in (w, θ) jointly."""
    d = NUM_WEIGHTS
    joint = torch.cat([flat_weights, theta_values.reshape(-1)])
    shape = theta_values.shape

    def f(z):
        return train_loss(unpack(z[:d]), z[d:].reshape(shape))

    full = torch.autograd.functional.hessian(f, joint)
    hess, mixed = full[:d, :d], full[:d, d:]
    w_leaf = flat_weights.clone().requires_grad_(True)
    (b,) = torch.autograd.grad(val_loss(unpack(w_leaf)), [w_leaf])
    x = torch.linalg.solve(hess + damping * torch.eye(d, dtype=DT), b)
    return (-(mixed.T @ x)).reshape(shape)


_SOLUTIONS = {}


def solved(layout):
    """(θ, w*(θ)), memoised: the Newton solve is the expensive part of these tests."""
    if layout not in _SOLUTIONS:
        theta = torch.tensor(THETA[layout], dtype=DT)
        if layout == "scalar":
            theta = theta[0]
        _SOLUTIONS[layout] = (theta, newton_solve(theta, START))
    return _SOLUTIONS[layout]


def assert_close(actual, expected, rtol):
    scale = float(torch.linalg.vector_norm(expected))
    error = float(torch.linalg.vector_norm(actual - expected))
    assert error <= rtol * scale, f"relative error {error / scale:.3g} > {rtol:g}"


@pytest.mark.parametrize("layout", ["scalar", "per_layer"])
def test_hessian_is_positive_definite_at_the_inner_optimum(layout):
    theta, w_star = solved(layout)
    assert float(torch.linalg.eigvalsh(dense_hessian(w_star, theta))[0]) > 1e-3


@pytest.mark.parametrize("layout", ["scalar", "per_layer"])
def test_cross_entropy_alone_is_not_convex_at_the_inner_optimum(layout):
    """The problem is genuinely non-convex: only the penalty makes H positive definite at w*."""
    _, w_star = solved(layout)
    no_penalty = torch.tensor(-60.0, dtype=DT)
    assert float(torch.linalg.eigvalsh(dense_hessian(w_star, no_penalty))[0]) < -1e-2


@pytest.mark.parametrize("layout", ["scalar", "per_layer"])
def test_exact_matches_central_differences(layout):
    theta, w_star = solved(layout)
    result = run(w_star, theta, Exact())
    assert result.grads[0].shape == theta.shape
    assert_close(result.grads[0], central_difference(theta, w_star), rtol=1e-7)


def test_exact_matches_dense_reference():
    theta, w_star = solved("per_layer")
    assert_close(run(w_star, theta, Exact()).grads[0], dense_reference(w_star, theta), 1e-10)


def test_cg_with_small_damping_is_close_to_exact():
    theta, w_star = solved("per_layer")
    result = run(w_star, theta, ConjugateGradient(tol=1e-12, max_iter=200, damping=1e-8))
    assert result.solve.status == "converged"
    assert_close(result.grads[0], dense_reference(w_star, theta), rtol=1e-5)


@pytest.mark.parametrize("damping", [1e-3, 1e-1, 10.0])
def test_damped_cg_at_the_optimum_is_stable_and_solves_the_damped_system(damping):
    theta, w_star = solved("per_layer")
    result = run(w_star, theta, ConjugateGradient(tol=1e-12, max_iter=200, damping=damping))
    assert result.failure is None
    assert result.solve.status == "converged"
    assert_close(result.grads[0], dense_reference(w_star, theta, damping), rtol=1e-8)


def indefinite_point():
    """Random weights with a weak penalty: the training Hessian has a negative eigenvalue."""
    theta = torch.tensor([-6.0, -6.0], dtype=DT)
    smallest = float(torch.linalg.eigvalsh(dense_hessian(START, theta))[0])
    return theta, smallest


def test_damped_cg_is_stable_where_the_hessian_is_indefinite():
    theta, smallest = indefinite_point()
    assert smallest < 0
    damping = -smallest + 0.05
    result = run(START, theta, ConjugateGradient(tol=1e-12, max_iter=500, damping=damping))
    assert result.solve.status == "converged"
    assert bool(torch.isfinite(result.grads[0]).all())
    assert_close(result.grads[0], dense_reference(START, theta, damping), rtol=1e-8)


def test_undamped_cg_where_the_hessian_is_indefinite_never_returns_garbage():
    theta, smallest = indefinite_point()
    assert smallest < 0
    result = run(START, theta, ConjugateGradient(tol=1e-12, max_iter=500))
    assert not result.solve.diverged
    assert bool(torch.isfinite(result.grads[0]).all())
