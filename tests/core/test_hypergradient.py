"""The `hypergradient` entry point: write_grad, input validation, singular systems, solver
arguments.

Most tests use a quadratic toy with an explicit symmetric positive definite A:
L_t(w, λ) = ½wᵀAw − λ uᵀw, L_v(w) = ½‖w − t‖², so H = A, ∂²L_t/∂λ∂w = −u and, at any w,
dL_v/dλ = uᵀA⁻¹(w − t).
"""

import pytest
import torch

from hpo_cli import (
    ConjugateGradient,
    Exact,
    HypergradientError,
    Identity,
    Neumann,
    SingularSystemError,
    hypergradient,
)

DT = torch.float64
A = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.5]], dtype=DT)
U = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
TARGET = torch.tensor([0.3, -0.1, 0.7], dtype=DT)
W0 = torch.tensor([0.2, 0.4, -0.6], dtype=DT)


def toy(matrix=A, lam_value=0.5):
    w = W0.clone().requires_grad_(True)
    lam = torch.tensor(lam_value, dtype=DT, requires_grad=True)
    train = 0.5 * w @ matrix @ w - lam * (U @ w)
    val = 0.5 * ((w - TARGET) ** 2).sum()
    return w, lam, train, val


def toy_hypergradient():
    return float(U @ torch.linalg.solve(A, W0 - TARGET))


def test_toy_exact_matches_closed_form():
    w, lam, train, val = toy()
    result = hypergradient(train, val, [w], [lam], Exact())
    assert float(result.grads[0]) == pytest.approx(toy_hypergradient(), rel=1e-13)


def test_norm_property_is_the_euclidean_norm_of_all_grads():
    w, lam, train, val = toy()
    mu = torch.tensor([0.1, 0.2], dtype=DT, requires_grad=True)
    train = train + (mu**2).sum() * (w**2).sum()
    result = hypergradient(train, val, [w], [lam, mu], Exact())
    expected = float(torch.cat([g.reshape(-1) for g in result.grads]).norm())
    assert result.norm == pytest.approx(expected, rel=1e-14)


# ---- the validation graph --------------------------------------------------------------------


def test_the_validation_graph_is_freed_unless_retained():
    w, lam, train, val = toy()
    first = hypergradient(train, val, [w], [lam], Exact(), retain_val_graph=True)
    second = hypergradient(train, val, [w], [lam], ConjugateGradient())  # frees it
    assert float(second.grads[0]) == pytest.approx(float(first.grads[0]), rel=1e-12)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        val.backward()


def test_losses_sharing_a_graph_need_the_validation_graph_retained():
    """One forward pass z = M w feeding both losses: freeing L_v's graph would free z's."""
    w = W0.clone().requires_grad_(True)
    lam = torch.tensor(0.5, dtype=DT, requires_grad=True)
    shared = A @ w  # z = A w, used by both losses
    train = 0.5 * w @ shared - lam * (U @ w)  # the toy's L_t
    val = 0.5 * ((shared - TARGET) ** 2).sum()
    with pytest.raises(ValueError, match=r"share part of their autograd graph.*retain_val_graph"):
        hypergradient(train, val, [w], [lam], Exact())

    shared = A @ w
    train = 0.5 * w @ shared - lam * (U @ w)
    val = 0.5 * ((shared - TARGET) ** 2).sum()
    result = hypergradient(train, val, [w], [lam], Exact(), retain_val_graph=True)
    # dL_v/dλ = uᵀA⁻¹ (∂L_v/∂w) with ∂L_v/∂w = Aᵀ(A w − t)
    expected = float(U @ torch.linalg.solve(A, A.T @ (A @ W0 - TARGET)))
    assert float(result.grads[0]) == pytest.approx(expected, rel=1e-12)


# ---- write_grad -------------------------------------------------------------------------------


def test_write_grad_sets_grad_when_empty():
    w, lam, train, val = toy()
    hypergradient(train, val, [w], [lam], Exact(), write_grad=True)
    assert float(lam.grad) == pytest.approx(toy_hypergradient(), rel=1e-13)


def test_write_grad_is_off_by_default():
    w, lam, train, val = toy()
    hypergradient(train, val, [w], [lam], Exact())
    assert lam.grad is None


def test_write_grad_accumulates_onto_a_gradient_from_backward():
    w, lam, train, val = toy()
    (3.0 * lam**2).backward(retain_graph=True)  # lam.grad = 6 λ = 3
    hypergradient(train, val, [w], [lam], Exact(), write_grad=True)
    assert float(lam.grad) == pytest.approx(3.0 + toy_hypergradient(), rel=1e-13)


def test_write_grad_twice_accumulates_twice():
    w, lam, train, val = toy()
    hypergradient(train, val, [w], [lam], Exact(), write_grad=True, retain_val_graph=True)
    hypergradient(train, val, [w], [lam], Exact(), write_grad=True)
    assert float(lam.grad) == pytest.approx(2 * toy_hypergradient(), rel=1e-13)


def test_written_grad_does_not_alias_the_result():
    w, lam, train, val = toy()
    result = hypergradient(train, val, [w], [lam], Exact(), write_grad=True)
    lam.grad.zero_()
    assert float(result.grads[0]) == pytest.approx(toy_hypergradient(), rel=1e-13)


def test_written_grad_drives_a_torch_optimizer_step():
    w, lam, train, val = toy()
    optimizer = torch.optim.SGD([lam], lr=0.1)
    hypergradient(train, val, [w], [lam], Exact(), write_grad=True)
    optimizer.step()
    assert float(lam.detach()) == pytest.approx(0.5 - 0.1 * toy_hypergradient(), rel=1e-13)


DIVERGING = Neumann(terms=21, alpha=1.0)  # λmax(A) ≈ 3.5 > 2/α


def test_grad_not_written_on_failure_without_raising():
    w, lam, train, val = toy()
    result = hypergradient(
        train, val, [w], [lam], DIVERGING, write_grad=True, raise_on_failure=False
    )
    assert result.failure is not None
    assert lam.grad is None


def test_grad_not_written_on_failure_when_raising():
    w, lam, train, val = toy()
    lam.grad = torch.tensor(1.25, dtype=DT)
    with pytest.raises(HypergradientError):
        hypergradient(train, val, [w], [lam], DIVERGING, write_grad=True)
    assert float(lam.grad) == 1.25


# ---- bad input --------------------------------------------------------------------------------


def test_non_scalar_train_loss_is_rejected():
    w, lam, _, val = toy()
    with pytest.raises(ValueError, match="train_loss"):
        hypergradient(lam * w**2, val, [w], [lam], Identity())


def test_non_scalar_val_loss_is_rejected():
    w, lam, train, _ = toy()
    with pytest.raises(ValueError, match="val_loss"):
        hypergradient(train, (w - TARGET) ** 2, [w], [lam], Identity())


def test_empty_hparams_are_rejected():
    w, _, train, val = toy()
    with pytest.raises(ValueError, match="hparams"):
        hypergradient(train, val, [w], [], Identity())


def test_empty_params_are_rejected():
    _, lam, train, val = toy()
    with pytest.raises(ValueError, match="params"):
        hypergradient(train, val, [], [lam], Identity())


def test_hparams_not_requiring_grad_are_rejected():
    w, lam, train, val = toy()
    frozen = torch.tensor(1.0, dtype=DT)
    with pytest.raises(ValueError, match="require grad"):
        hypergradient(train, val, [w], [lam, frozen], Identity())


# ---- singular Hessians ------------------------------------------------------------------------

SINGULAR = torch.diag(torch.tensor([1.0, 2.0, 0.0], dtype=DT))


def diagonal_matvec(v):
    return [SINGULAR @ v[0]]


def test_exact_raises_on_singular_hessian():
    with pytest.raises(SingularSystemError):
        Exact()(diagonal_matvec, [torch.ones(3, dtype=DT)])


def test_hypergradient_propagates_singular_system_error():
    w, lam, train, val = toy(SINGULAR)
    with pytest.raises(SingularSystemError):
        hypergradient(train, val, [w], [lam], Exact())


def test_exact_pinv_gives_minimum_norm_solution_of_diagonal_system():
    x, info = Exact(method="pinv")(diagonal_matvec, [torch.ones(3, dtype=DT)])
    assert info.converged
    torch.testing.assert_close(x[0], torch.tensor([1.0, 0.5, 0.0], dtype=DT), rtol=1e-15, atol=0)


def rank_deficient_matrix(dim=6, rank=3, seed=0):
    """Q diag(3, 2, 1, 0, 0, 0) Qᵀ, with an orthonormal Q, and its null space."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=DT))
    eigenvalues = torch.zeros(dim, dtype=DT)
    eigenvalues[:rank] = torch.arange(rank, 0, -1, dtype=DT)
    return q @ torch.diag(eigenvalues) @ q.T, q, eigenvalues


def test_exact_pinv_gives_minimum_norm_least_squares_solution():
    matrix, q, eigenvalues = rank_deficient_matrix()
    b = torch.linspace(-1.0, 2.0, 6, dtype=DT)
    inverse = torch.where(eigenvalues > 0, 1.0 / eigenvalues, torch.zeros_like(eigenvalues))
    expected = q @ (inverse * (q.T @ b))
    x, _ = Exact(method="pinv", rtol=1e-10)(lambda v: [matrix @ v[0]], [b])
    torch.testing.assert_close(x[0], expected, rtol=1e-10, atol=1e-12)


def test_exact_does_not_report_a_numerically_singular_system_as_converged():
    """A rank-deficient PSD Hessian (an over-parametrised model) is singular in exact
    arithmetic, but round-off leaves LU a tiny pivot, so torch.linalg.solve does not raise.
    Exact must then either raise SingularSystemError or not call the garbage solution
    converged (its own residual is far above 1)."""
    matrix, _, _ = rank_deficient_matrix()
    b = torch.linspace(-1.0, 2.0, 6, dtype=DT)
    try:
        x, info = Exact()(lambda v: [matrix @ v[0]], [b])
    except SingularSystemError:
        return
    assert info.status != "converged", (
        f"status {info.status} with residual {info.residual:.3g}, max |x| = {x[0].abs().max():.3g}"
    )


def test_exact_with_damping_solves_the_damped_singular_system():
    x, info = Exact(damping=0.5)(diagonal_matvec, [torch.ones(3, dtype=DT)])
    assert info.converged
    torch.testing.assert_close(x[0], torch.tensor([2 / 3, 0.4, 2.0], dtype=DT), rtol=1e-14, atol=0)


def test_exact_solves_the_symmetric_part_of_a_slightly_asymmetric_matvec():
    """Round-off makes a dense Hessian from HVPs slightly asymmetric; Exact uses (A + Aᵀ)/2."""
    skew = torch.tensor([[0.0, 1e-3, 0.0], [-1e-3, 0.0, 2e-3], [0.0, -2e-3, 0.0]], dtype=DT)
    b = torch.tensor([1.0, -1.0, 2.0], dtype=DT)
    x, _ = Exact()(lambda v: [(A + skew) @ v[0]], [b])
    torch.testing.assert_close(x[0], torch.linalg.solve(A, b), rtol=1e-13, atol=1e-15)


def test_exact_refuses_problems_above_max_dim():
    with pytest.raises(ValueError, match="max_dim"):
        Exact(max_dim=2)(diagonal_matvec, [torch.ones(3, dtype=DT)])


# ---- solver arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: Neumann(terms=-1),
        lambda: Neumann(terms=0),
        lambda: Neumann(alpha=0.0),
        lambda: Neumann(alpha=-0.1),
        lambda: Neumann(alpha="fast"),
        lambda: Neumann(lanczos_iterations=0),
        lambda: ConjugateGradient(max_iter=-1),
        lambda: ConjugateGradient(max_iter=0),
        lambda: ConjugateGradient(tol=-1e-3),
        lambda: ConjugateGradient(damping=-1e-3),
        lambda: Exact(damping=-1e-3),
        lambda: Exact(method="cholesky"),
    ],
    ids=[
        "neumann-terms",
        "neumann-no-terms",
        "neumann-alpha-zero",
        "neumann-alpha-negative",
        "neumann-alpha-string",
        "neumann-lanczos-iterations",
        "cg-max-iter",
        "cg-no-iterations",
        "cg-tol",
        "cg-damping",
        "exact-damping",
        "exact-method",
    ],
)
def test_invalid_solver_arguments_are_rejected(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize(
    "make",
    [
        lambda: Neumann(terms=1, alpha=1e-3),
        lambda: ConjugateGradient(max_iter=1, tol=0.0, damping=0.0),
        lambda: Exact(damping=0.0),
    ],
    ids=["neumann", "cg", "exact"],
)
def test_boundary_solver_arguments_are_accepted(make):
    make()


# ---- the solvers on their own -----------------------------------------------------------------


def dense_matvec(v):
    return [A @ v[0]]


B = [torch.tensor([1.0, -1.0, 2.0], dtype=DT)]
SOLUTION = torch.linalg.solve(A, B[0])


@pytest.mark.parametrize(
    "solver",
    [Exact(), ConjugateGradient(tol=1e-14), Neumann(terms=401, alpha=0.25)],
    ids=["exact", "cg", "neumann"],
)
def test_solvers_called_directly_solve_a_dense_spd_system(solver):
    x, info = solver(dense_matvec, B)
    assert not info.diverged
    torch.testing.assert_close(x[0], SOLUTION, rtol=1e-12, atol=1e-14)


def test_cg_with_jacobi_preconditioner_solves_the_system():
    inverse_diagonal = 1.0 / torch.diagonal(A)
    solver = ConjugateGradient(tol=1e-14, preconditioner=lambda r: [inverse_diagonal * r[0]])
    x, info = solver(dense_matvec, B)
    assert info.converged
    torch.testing.assert_close(x[0], SOLUTION, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "solver",
    [Exact(), ConjugateGradient(), Neumann(terms=6, alpha=0.25), Neumann(terms=6), Identity()],
    ids=["exact", "cg", "neumann", "neumann-auto", "identity"],
)
def test_zero_right_hand_side_gives_zero_solution(solver):
    x, info = solver(dense_matvec, [torch.zeros(3, dtype=DT)])
    assert not info.diverged
    assert torch.equal(x[0], torch.zeros(3, dtype=DT))


def test_solver_info_as_dict_is_flat():
    _, info = ConjugateGradient(tol=1e-14)(dense_matvec, B)
    as_dict = info.as_dict()
    assert as_dict["converged"] is True
    assert as_dict["diverged"] is False
    assert as_dict["solver"] == "cg"
