"""Hypergradients of ridge regression against its closed form (float64).

Training loss  L_t(w, c) = (1/n)‖Xw − y‖² + Σ_i c_i w_i²,  c = f(θ),
validation loss L_v(w) = (1/m)‖X_v w − y_v‖².

H = 2XᵀX/n + 2 diag(c), w*(c) = H⁻¹(2Xᵀy/n), b = ∇_w L_v(w*), and for any x ≈ H⁻¹b the IFT
hypergradient is dL_v/dc_i = −2 w*_i x_i (the mixed term (∂²L_t/∂c_i∂w)ᵀx = 2 w_i x_i), followed
by the chain rule through f. Every reference below is computed densely from these formulas.
"""

import itertools

import pytest
import torch

from hpo_cli import (
    ConjugateGradient,
    Exact,
    Identity,
    Neumann,
    constraint,
    hypergradient,
)

DT = torch.float64
N_TRAIN, N_VAL, DIM = 120, 80, 20

# d f / d θ for the constraints used here, written out by hand.
DERIVATIVES = {"exp": torch.exp, "softplus": torch.sigmoid}


def make_data(seed=0):
    gen = torch.Generator().manual_seed(seed)
    w_true = torch.randn(DIM, generator=gen, dtype=DT)
    x_train = torch.randn(N_TRAIN, DIM, generator=gen, dtype=DT)
    x_val = torch.randn(N_VAL, DIM, generator=gen, dtype=DT)
    y_train = x_train @ w_true + 0.5 * torch.randn(N_TRAIN, generator=gen, dtype=DT)
    y_val = x_val @ w_true + 0.5 * torch.randn(N_VAL, generator=gen, dtype=DT)
    return x_train, y_train, x_val, y_val


def ridge_hessian(x, c):
    return 2.0 * x.T @ x / x.shape[0] + 2.0 * torch.diag(c)


def ridge_solution(x, y, c):
    return torch.linalg.solve(ridge_hessian(x, c), 2.0 * x.T @ y / x.shape[0])


def val_gradient(x_val, y_val, w):
    return 2.0 * x_val.T @ (x_val @ w - y_val) / x_val.shape[0]


def grad_wrt_c(w, x):
    """dL_v/dc_i = −(∂²L_t/∂c_i∂w)ᵀ x = −2 w_i x_i for the inverse-HVP x."""
    return -2.0 * w * x


def chain_to_theta(grad_c, theta, name, per_weight):
    """dL_v/dθ from dL_v/dc through c = f(θ) (θ shared by every weight when not per-weight)."""
    grad_theta = DERIVATIVES[name](theta) * grad_c
    return grad_theta if per_weight else grad_theta.sum()


def neumann_partial_sum(h, b, alpha, terms):
    """x_K = α Σ_{k=0}^{K−1} (I − αH)ᵏ b = H⁻¹(I − (I − αH)^K) b (K terms), via the eigenbasis
    of H."""
    eigvals, eigvecs = torch.linalg.eigh(h)
    filt = (1.0 - (1.0 - alpha * eigvals) ** terms) / eigvals
    return eigvecs @ (filt * (eigvecs.T @ b))


def krylov_cg_iterate(h, b, steps):
    """The k-th CG iterate from 0: the minimiser of the H-norm error over span{b, Hb, ...}."""
    columns = [b]
    for _ in range(steps - 1):
        columns.append(h @ columns[-1])
    basis, _ = torch.linalg.qr(torch.stack(columns, dim=1))
    return basis @ torch.linalg.solve(basis.T @ h @ basis, basis.T @ b)


class Ridge:
    """One ridge problem at w = w*(c), with the autograd losses and the dense references."""

    def __init__(self, name="exp", per_weight=True, seed=0):
        self.x, self.y, self.x_val, self.y_val = make_data(seed)
        self.name, self.per_weight = name, per_weight
        f = constraint(name)
        scalar_c0 = torch.tensor(0.2, dtype=DT)
        c0 = torch.linspace(0.05, 0.5, DIM, dtype=DT) if per_weight else scalar_c0
        self.theta = f.inverse(c0).requires_grad_(True)
        self.c = f(self.theta.detach()).expand(DIM)
        self.h = ridge_hessian(self.x, self.c)
        self.w_star = ridge_solution(self.x, self.y, self.c)
        self.b = val_gradient(self.x_val, self.y_val, self.w_star)

    def losses(self):
        """Fresh (w, train_loss, val_loss) with w a leaf at w*."""
        w = self.w_star.clone().requires_grad_(True)
        c = constraint(self.name)(self.theta).expand(DIM)
        train = ((self.x @ w - self.y) ** 2).mean() + (c * w**2).sum()
        val = ((self.x_val @ w - self.y_val) ** 2).mean()
        return w, train, val

    def run(self, solver, **kwargs):
        w, train, val = self.losses()
        return hypergradient(train, val, [w], [self.theta], solver, **kwargs)

    def expected(self, x):
        """The hypergradient w.r.t. θ that an inverse-HVP x should produce."""
        grad_c = grad_wrt_c(self.w_star, x)
        return chain_to_theta(grad_c, self.theta.detach(), self.name, self.per_weight)

    def exact(self):
        return self.expected(torch.linalg.solve(self.h, self.b))

    def lambda_max(self):
        return float(torch.linalg.eigvalsh(self.h)[-1])


def assert_close(actual, expected, rtol):
    scale = float(torch.linalg.vector_norm(expected))
    error = float(torch.linalg.vector_norm(actual - expected))
    assert error <= rtol * scale, f"relative error {error / scale:.3g} > {rtol:g}"


PROBLEMS = [
    pytest.param("exp", True, id="per_weight-exp"),
    pytest.param("softplus", True, id="per_weight-softplus"),
    pytest.param("exp", False, id="scalar-exp"),
    pytest.param("softplus", False, id="scalar-softplus"),
]


def test_ridge_reference_is_a_minimiser():
    """Sanity check of the references: w* zeroes the training gradient, H is SPD."""
    ridge = Ridge()
    w, train, _ = ridge.losses()
    (grad,) = torch.autograd.grad(train, [w])
    assert float(grad.norm()) < 1e-12
    assert float(torch.linalg.eigvalsh(ridge.h)[0]) > 0.1


@pytest.mark.parametrize(("name", "per_weight"), PROBLEMS)
def test_exact_matches_closed_form(name, per_weight):
    ridge = Ridge(name, per_weight)
    result = ridge.run(Exact())
    assert result.grads[0].shape == ridge.theta.shape
    assert_close(result.grads[0], ridge.exact(), rtol=1e-10)


@pytest.mark.parametrize(("name", "per_weight"), PROBLEMS)
def test_cg_matches_closed_form_within_d_iterations(name, per_weight):
    ridge = Ridge(name, per_weight)
    result = ridge.run(ConjugateGradient(tol=1e-13, max_iter=DIM))
    assert result.solve.iterations <= DIM
    assert_close(result.grads[0], ridge.exact(), rtol=1e-8)


def test_cg_reports_convergence_on_spd_ridge():
    result = Ridge().run(ConjugateGradient(tol=1e-10, max_iter=DIM))
    assert result.solve.status == "converged"


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_cg_truncated_iterate_is_the_krylov_minimiser(steps):
    ridge = Ridge()
    result = ridge.run(ConjugateGradient(tol=0.0, max_iter=steps))
    x_k = krylov_cg_iterate(ridge.h, ridge.b, steps)
    assert result.solve.iterations == steps
    assert_close(result.grads[0], ridge.expected(x_k), rtol=1e-9)


def test_identity_matches_closed_form():
    ridge = Ridge()
    result = ridge.run(Identity())
    assert_close(result.grads[0], ridge.expected(ridge.b), rtol=1e-12)


def test_scaled_identity_matches_closed_form():
    ridge = Ridge()
    result = ridge.run(Identity(scale=0.3))
    assert_close(result.grads[0], ridge.expected(0.3 * ridge.b), rtol=1e-12)


@pytest.mark.parametrize("terms", [1, 2, 4, 11, 41])
@pytest.mark.parametrize(("name", "per_weight"), PROBLEMS[::2])
def test_neumann_equals_closed_form_partial_sum(name, per_weight, terms):
    ridge = Ridge(name, per_weight)
    alpha = 1.0 / ridge.lambda_max()
    result = ridge.run(Neumann(terms=terms, alpha=alpha))
    x_k = neumann_partial_sum(ridge.h, ridge.b, alpha, terms)
    assert_close(result.grads[0], ridge.expected(x_k), rtol=1e-10)


def test_neumann_partial_sum_with_a_smaller_step():
    ridge = Ridge()
    alpha = 0.37 / ridge.lambda_max()
    result = ridge.run(Neumann(terms=8, alpha=alpha))
    x_k = neumann_partial_sum(ridge.h, ridge.b, alpha, 8)
    assert_close(result.grads[0], ridge.expected(x_k), rtol=1e-10)


def test_neumann_error_shrinks_geometrically():
    """‖g_K − g*‖ ≤ ‖diag(f'(θ)·2w*)‖ ρ^K ‖H⁻¹b‖ with ρ = 1 − λmin/λmax for α = 1/λmax."""
    ridge = Ridge()
    eigvals = torch.linalg.eigvalsh(ridge.h)
    alpha = 1.0 / float(eigvals[-1])
    rho = 1.0 - alpha * float(eigvals[0])
    assert rho < 0.95  # the bound below is informative
    exact = ridge.exact()
    mixed_norm = float((DERIVATIVES["exp"](ridge.theta.detach()) * 2 * ridge.w_star).abs().max())
    solution_norm = float(torch.linalg.solve(ridge.h, ridge.b).norm())
    errors = []
    for terms in [1, 6, 11, 21, 41, 81]:
        grad = ridge.run(Neumann(terms=terms, alpha=alpha)).grads[0]
        error = float((grad - exact).norm())
        bound = mixed_norm * rho**terms * solution_norm
        assert error <= bound * (1 + 1e-9) + 1e-14, (terms, error, bound)
        errors.append(error)
    assert all(later < earlier for earlier, later in itertools.pairwise(errors))
    assert errors[-1] <= 1e-8 * errors[0]


def test_neumann_auto_step_estimates_lambda_max_from_below():
    """Power iteration gives a Rayleigh quotient: ≤ λmax, and ≥ λmax/2 so that α < 2/λmax."""
    ridge = Ridge()
    lam = ridge.lambda_max()
    estimate = ridge.run(Neumann(terms=6, alpha="auto")).solve.extras["lambda_max_estimate"]
    assert lam / 2 < estimate <= lam * (1 + 1e-12)


def test_neumann_auto_step_equals_partial_sum_for_its_step():
    ridge = Ridge()
    result = ridge.run(Neumann(terms=13, alpha="auto"))
    alpha = result.solve.extras["alpha"]
    assert alpha == pytest.approx(1.0 / result.solve.extras["lambda_max_estimate"], rel=1e-15)
    x_k = neumann_partial_sum(ridge.h, ridge.b, alpha, 13)
    assert_close(result.grads[0], ridge.expected(x_k), rtol=1e-10)


def test_neumann_auto_step_converges_to_exact():
    ridge = Ridge()
    exact = ridge.exact()
    errors = [
        float((ridge.run(Neumann(terms=k, alpha="auto")).grads[0] - exact).norm())
        for k in (6, 21, 81)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] <= 1e-6 * float(exact.norm())


def test_neumann_tolerance_stops_early_at_a_partial_sum():
    ridge = Ridge()
    alpha = 1.0 / ridge.lambda_max()
    result = ridge.run(Neumann(terms=1001, alpha=alpha, tol=1e-6))
    terms = result.solve.iterations + 1  # the highest power summed, plus the term k = 0
    assert result.solve.status == "converged"
    assert terms < 1001
    x_k = neumann_partial_sum(ridge.h, ridge.b, alpha, terms)
    assert_close(result.grads[0], ridge.expected(x_k), rtol=1e-10)


def dense_residual(h, x, b):
    return float((h @ x - b).norm() / b.norm())


def test_residual_of_identity_is_dense_residual():
    ridge = Ridge()
    result = ridge.run(Identity())
    assert result.residual == pytest.approx(dense_residual(ridge.h, ridge.b, ridge.b), rel=1e-10)


@pytest.mark.parametrize("terms", [1, 4, 16])
def test_residual_of_neumann_is_dense_residual(terms):
    ridge = Ridge()
    alpha = 1.0 / ridge.lambda_max()
    result = ridge.run(Neumann(terms=terms, alpha=alpha))
    x_k = neumann_partial_sum(ridge.h, ridge.b, alpha, terms)
    assert result.residual == pytest.approx(dense_residual(ridge.h, x_k, ridge.b), rel=1e-8)


def test_residual_of_truncated_cg_is_dense_residual():
    ridge = Ridge()
    result = ridge.run(ConjugateGradient(tol=0.0, max_iter=3))
    x_k = krylov_cg_iterate(ridge.h, ridge.b, 3)
    assert result.residual == pytest.approx(dense_residual(ridge.h, x_k, ridge.b), rel=1e-8)


def test_residual_of_damped_cg_is_measured_against_the_undamped_hessian():
    ridge = Ridge()
    damping = 0.5
    result = ridge.run(ConjugateGradient(tol=1e-13, max_iter=DIM, damping=damping))
    x_damped = torch.linalg.solve(ridge.h + damping * torch.eye(DIM, dtype=DT), ridge.b)
    assert result.residual == pytest.approx(dense_residual(ridge.h, x_damped, ridge.b), rel=1e-8)
    assert result.solve.residual < 1e-12  # the solver's own residual is for H + μI


def test_residual_of_exact_is_tiny():
    assert Ridge().run(Exact()).residual < 1e-13


def test_no_residual_when_not_checked():
    result = Ridge().run(Identity(), check_residual=False)
    assert result.residual is None


@pytest.mark.parametrize(
    ("solver", "expected_hvps"),
    [
        (Identity(), 1),
        (Neumann(terms=8, alpha=0.1), 8),
        (Neumann(terms=8, alpha="auto", lanczos_iterations=5), 13),
        (ConjugateGradient(tol=0.0, max_iter=4), 5),
        (Exact(), DIM + 1),
    ],
    ids=["identity", "neumann", "neumann-auto", "cg", "exact"],
)
def test_hvp_count_includes_residual_check(solver, expected_hvps):
    assert Ridge().run(solver).hvps == expected_hvps


# ---- the direct term ∂L_v/∂λ --------------------------------------------------------------


def penalised_val_loss_reference(ridge, c_scalar):
    """L_v(w*(c), c) = (1/m)‖X_v w* − y_v‖² + c‖w*‖², densely (scalar c)."""
    c = c_scalar.expand(DIM)
    w = ridge_solution(ridge.x, ridge.y, c)
    return float(((ridge.x_val @ w - ridge.y_val) ** 2).mean() + c_scalar * (w**2).sum())


def direct_term_hypergradient(ridge):
    """Exact hypergradient for L_v = (1/m)‖X_v w − y_v‖² + c‖w‖², scalar c = e^θ."""
    w, train, _ = ridge.losses()
    c_graph = constraint("exp")(ridge.theta)
    val = ((ridge.x_val @ w - ridge.y_val) ** 2).mean() + c_graph * (w**2).sum()
    return float(hypergradient(train, val, [w], [ridge.theta], Exact()).grads[0])


def test_direct_term_enters_when_lambda_is_in_the_validation_loss():
    """dL_v/dc = ∂L_v/∂c − (2w*)ᵀH⁻¹∇_w L_v = ‖w*‖² − 2 w*ᵀ H⁻¹ (b + 2c w*); dc/dθ = c."""
    ridge = Ridge("exp", per_weight=False)
    c, w_star = float(ridge.c[0]), ridge.w_star
    grad_c = (w_star**2).sum() - 2 * w_star @ torch.linalg.solve(ridge.h, ridge.b + 2 * c * w_star)
    assert direct_term_hypergradient(ridge) == pytest.approx(float(grad_c) * c, rel=1e-10)


def test_direct_term_hypergradient_matches_central_differences():
    ridge = Ridge("exp", per_weight=False)
    theta0, step = ridge.theta.detach(), 1e-5
    finite_difference = (
        penalised_val_loss_reference(ridge, torch.exp(theta0 + step))
        - penalised_val_loss_reference(ridge, torch.exp(theta0 - step))
    ) / (2 * step)
    assert direct_term_hypergradient(ridge) == pytest.approx(finite_difference, rel=1e-7)


@pytest.mark.parametrize(
    "solver",
    [Exact(), ConjugateGradient(), Neumann(terms=6, alpha=0.1), Neumann(terms=6), Identity()],
    ids=["exact", "cg", "neumann", "neumann-auto", "identity"],
)
def test_direct_term_alone_when_validation_loss_ignores_the_weights(solver):
    """L_v = c² with no dependence on w: b = 0, so dL_v/dθ = 2c · c for every solver."""
    ridge = Ridge("exp", per_weight=False)
    w, train, _ = ridge.losses()
    c_graph = constraint("exp")(ridge.theta)
    val = c_graph**2 + 0.0 * w.sum()
    result = hypergradient(train, val, [w], [ridge.theta], solver)
    c = float(ridge.c[0])
    assert float(result.grads[0]) == pytest.approx(2 * c * c, rel=1e-12)
