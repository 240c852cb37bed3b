"""hpo_cli.analysis.hessian against closed forms, dense matrices and the solvers themselves
(float64)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hpo_cli.analysis.hessian import (
    analyse,
    analyse_eigenvalues,
    cg_diagnosis,
    cg_iterations,
    dense_spectrum,
    extreme_eigenvalues,
    ggn_operator,
    hessian_operator,
    hutchinson_trace,
    lanczos_quadrature,
    lanczos_tridiagonal,
    matrix_operator,
    neumann_diagnosis,
)
from hpo_cli.core.hvp import dense_matrix
from hpo_cli.core.solvers import Neumann, Status

DOUBLE = torch.float64


def random_symmetric(eigenvalues: list[float], seed: int = 0) -> torch.Tensor:
    """Q diag(λ) Qᵀ with a random orthogonal Q."""
    generator = torch.Generator().manual_seed(seed)
    size = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=DOUBLE))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=DOUBLE)) @ q.T


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_ridge_hessian_is_the_closed_form():
    """L(w) = (1/n)‖Xw − y‖² + λ‖w‖² has H = 2XᵀX/n + 2λI at every w."""
    generator = torch.Generator().manual_seed(1)
    n, p, decay = 30, 7, 0.3
    x = torch.randn(n, p, generator=generator, dtype=DOUBLE)
    y = torch.randn(n, generator=generator, dtype=DOUBLE)
    w = torch.randn(p, generator=generator, dtype=DOUBLE, requires_grad=True)
    loss = (x @ w - y).square().mean() + decay * w.square().sum()
    spectrum = dense_spectrum(hessian_operator(loss, [w]))
    closed_form = 2 * x.T @ x / n + 2 * decay * torch.eye(p, dtype=DOUBLE)
    expected = torch.linalg.eigvalsh(closed_form)
    assert relative_error(spectrum.eigenvalues, expected) < 1e-12
    assert spectrum.rank == p and spectrum.negative == 0 and spectrum.gap is None
    assert spectrum.condition_full == pytest.approx(float(expected[-1] / expected[0]), rel=1e-10)
    assert spectrum.condition_nonzero == spectrum.condition_full
    assert spectrum.trace == pytest.approx(float(closed_form.trace()), rel=1e-12)
    assert spectrum.asymmetry < 1e-14


def two_layer_problem(seed: int):
    """Seed 004: Y ≈ W₂W₁X with X (5×5, samples as columns), W₁ (100×5), W₂ (5×100)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 100, bias=False), nn.Linear(100, 5, bias=False)).double()
    x = torch.randn(5, 5, generator=generator, dtype=DOUBLE)  # features × samples
    y = torch.randn(5, 5, generator=generator, dtype=DOUBLE)  # outputs × samples
    outputs = model(x.T).T  # torch takes samples as rows: (x.T W₁ᵀ W₂ᵀ)ᵀ = W₂W₁X
    loss = 0.5 * (y - outputs).square().sum()
    activations = model[0].weight.detach() @ x  # A = W₁X, hidden × samples
    return model, loss, activations


@pytest.mark.parametrize("seed", [0, 1])
def test_two_layer_linear_hessian_is_identity_kron_gram(seed):
    """∂²/∂vec(W₂)² of ½‖Y − W₂W₁X‖² is I_out ⊗ (AAᵀ), A = W₁X, for torch's row-major
    flattening of W₂ (out × hidden), at any weights (random, not a minimum)."""
    model, loss, activations = two_layer_problem(seed)
    operator = hessian_operator(loss, [model[1].weight])
    matrix = dense_matrix(operator.matvec, operator.like)
    gram = activations @ activations.T  # 100 × 100, rank 5
    identity = torch.eye(5, dtype=DOUBLE)
    assert relative_error(matrix, torch.kron(identity, gram)) < 1e-12
    # The column-major (mathematicians' vec) form (AAᵀ) ⊗ I is a different matrix here ...
    assert relative_error(matrix, torch.kron(gram, identity)) > 0.1
    # ... with the same eigenvalues, so spectra, ranks and condition numbers agree.
    spectrum = dense_spectrum(operator)
    for closed_form in (torch.kron(identity, gram), torch.kron(gram, identity)):
        reference = analyse_eigenvalues(torch.linalg.eigvalsh(closed_form))
        assert relative_error(spectrum.eigenvalues, reference.eigenvalues) < 1e-8
        assert spectrum.rank == reference.rank == 25
        assert spectrum.condition_nonzero == pytest.approx(reference.condition_nonzero, rel=1e-8)
    # Non-zero spectrum = 5 copies of the eigenvalues of AᵀA (5×5); κ over it is theirs.
    small = torch.linalg.eigvalsh(activations.T @ activations)
    assert spectrum.condition_nonzero == pytest.approx(float(small[-1] / small[0]), rel=1e-8)
    assert spectrum.condition_full == math.inf and spectrum.negative == 0
    assert spectrum.gap > 1e8, "a clear cut between 25 non-zero and 475 zero eigenvalues"


def test_the_rank_tolerance_decides_the_condition_number():
    """Eigenvalues {1e-12, 1e-3, 1, 10}: the default τ (4·10·ε ≈ 9e-15) keeps 1e-12, so κ over
    the non-zero spectrum is 1e13; rtol=1e-10 drops it and κ becomes 1e4."""
    values = torch.tensor([1e-12, 1e-3, 1.0, 10.0], dtype=DOUBLE)
    default = analyse_eigenvalues(values)
    assert default.tolerance == pytest.approx(10 * 4 * torch.finfo(DOUBLE).eps)
    assert default.rank == 4 and default.condition_nonzero == pytest.approx(1e13)
    assert default.condition_full == pytest.approx(1e13) and default.gap is None
    loose = analyse_eigenvalues(values, rtol=1e-10)
    assert loose.rank == 3 and loose.condition_nonzero == pytest.approx(1e4)
    assert loose.gap == pytest.approx(1e-3 / 1e-12) and loose.condition_full == math.inf
    # The same spectrum computed in float32 is judged with float32's ε: 1e-12 is then noise.
    assert analyse_eigenvalues(values, dtype=torch.float32).rank == 3


def small_mlp_loss(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    inputs = torch.randn(20, 4, dtype=DOUBLE)
    targets = torch.randint(0, 3, (20,))
    outputs = model(inputs)
    loss = F.cross_entropy(outputs, targets)
    return model, inputs, targets, outputs, loss


def test_lanczos_extremes_match_the_dense_eigenvalues():
    model, _, _, _, loss = small_mlp_loss()
    operator = hessian_operator(loss, list(model.parameters()))
    exact = dense_spectrum(operator).eigenvalues
    assert exact[0] < 0, "an untrained MLP's Hessian is indefinite"
    scale = float(exact.abs().max())
    high, low = extreme_eigenvalues(operator, 4, "LA"), extreme_eigenvalues(operator, 4, "SA")
    assert high.converged and low.converged
    top, bottom = torch.as_tensor(high.values), torch.as_tensor(low.values)
    assert float((top - exact[-4:]).abs().max()) < 1e-9 * scale
    assert float((bottom - exact[:4]).abs().max()) < 1e-9 * scale
    with pytest.raises(ValueError, match="k=51"):
        extreme_eigenvalues(operator, operator.size, "LA")


def test_without_arpack_convergence_ritz_values_bound_the_spectrum_from_inside():
    """A crowded bottom (λ_i = (i/100)²) and a single restart: ARPACK gives up, and the Ritz
    values of plain Lanczos stand in, flagged, each no smaller than its eigenvalue."""
    eigenvalues = [(i / 100) ** 2 for i in range(1, 101)]
    operator = matrix_operator(random_symmetric(eigenvalues, seed=9))
    low = extreme_eigenvalues(operator, 6, "SA", maxiter=1, fallback_steps=20)
    assert not low.converged and len(low.values) == 6
    # Cauchy interlacing: the j-th smallest Ritz value is ≥ the j-th smallest eigenvalue.
    assert all(low.values >= torch.tensor(eigenvalues[:6]).numpy() - 1e-12)
    assert low.values[-1] <= 1.0 + 1e-12


def test_hutchinson_interval_holds_the_exact_trace():
    matrix = random_symmetric([float(i) - 5 for i in range(40)], seed=3)
    estimate = hutchinson_trace(matrix_operator(matrix), probes=300, seed=0)
    exact = float(matrix.trace())
    assert estimate.lower <= exact <= estimate.upper
    assert estimate.upper - estimate.lower < 0.5 * abs(float(matrix.diagonal().abs().sum()))
    # Rademacher probes give zᵀDz = tr D exactly for a diagonal D: zero variance.
    diagonal = torch.diag(torch.arange(1.0, 11.0, dtype=DOUBLE))
    exact_estimate = hutchinson_trace(matrix_operator(diagonal), probes=5)
    assert exact_estimate.mean == pytest.approx(55.0) and exact_estimate.std_error < 1e-12


def test_lanczos_quadrature_is_exact_with_a_full_krylov_space():
    """With d steps the Ritz values are the eigenvalues and Σ τ_j θ_jᵖ = vᵀAᵖv / vᵀv."""
    eigenvalues = [-2.0, -0.5, 0.1, 1.0, 3.0, 7.0]
    matrix = random_symmetric(eigenvalues, seed=2)
    start = torch.randn(6, generator=torch.Generator().manual_seed(0), dtype=DOUBLE)
    diagonal, off = lanczos_tridiagonal(matrix_operator(matrix), start, 6)
    tridiagonal = torch.diag(diagonal) + torch.diag(off, 1) + torch.diag(off, -1)
    nodes, vectors = torch.linalg.eigh(tridiagonal)
    assert relative_error(nodes, torch.tensor(eigenvalues, dtype=DOUBLE)) < 1e-12
    weights = vectors[0].square()
    unit = start / start.norm()
    for power in range(4):
        moment = float(unit @ torch.linalg.matrix_power(matrix, power) @ unit)
        assert float((weights * nodes**power).sum()) == pytest.approx(moment, rel=1e-10)


def test_slq_density_integrates_to_one_and_sits_on_the_spectrum():
    matrix = random_symmetric([float(v) for v in torch.linspace(-1, 4, 60)], seed=4)
    report = analyse(matrix_operator(matrix), mode="lanczos", k=3, probes=20, slq_steps=30)
    grid, density = torch.tensor(report.density_grid), torch.tensor(report.density)
    assert float(torch.trapezoid(density, grid)) == pytest.approx(1.0, abs=1e-3)
    mean = float(torch.trapezoid(density * grid, grid))
    assert mean == pytest.approx(float(matrix.trace()) / 60, abs=0.3)
    assert report.smallest == pytest.approx(-1.0, rel=1e-9)
    assert report.largest == pytest.approx(4.0, rel=1e-9)
    assert report.spectrum is None and report.condition == math.inf
    rule = lanczos_quadrature(matrix_operator(matrix), probes=3, steps=30)
    assert float(rule.weights.sum()) == pytest.approx(1.0, rel=1e-12)
    assert float(rule.nodes.min()) >= -1 - 1e-9 and float(rule.nodes.max()) <= 4 + 1e-9
    dense = analyse(matrix_operator(matrix))
    grid, density = torch.tensor(dense.density_grid), torch.tensor(dense.density)
    assert float(torch.trapezoid(density, grid)) == pytest.approx(1.0, abs=1e-6)


def test_ggn_is_jacobian_transpose_output_hessian_jacobian():
    model, inputs, targets, outputs, loss = small_mlp_loss(seed=5)
    params = list(model.parameters())
    names = [name for name, _ in model.named_parameters()]
    decay = 0.05
    penalty = decay * sum(p.square().sum() for p in params)
    operator = ggn_operator(outputs, loss, params, penalty)
    ggn = dense_matrix(operator.matvec, operator.like)

    def output_function(*weights):
        state = dict(zip(names, weights, strict=True))
        return torch.func.functional_call(model, state, (inputs,)).reshape(-1)

    jacobian = torch.cat(
        [
            j.reshape(60, -1)
            for j in torch.autograd.functional.jacobian(output_function, tuple(params))
        ],
        dim=1,
    )
    output_hessian = torch.autograd.functional.hessian(
        lambda z: F.cross_entropy(z.reshape(20, 3), targets), outputs.detach().reshape(-1)
    )
    expected = jacobian.T @ output_hessian @ jacobian + 2 * decay * torch.eye(
        len(ggn), dtype=DOUBLE
    )
    assert relative_error(ggn, expected) < 1e-12
    spectrum = dense_spectrum(operator)
    assert spectrum.negative == 0 and spectrum.smallest >= 2 * decay * (1 - 1e-9)
    hessian = dense_spectrum(hessian_operator(loss + penalty, params))
    assert hessian.smallest < spectrum.smallest, "the Hessian adds indefinite curvature"


def test_seed_000_alpha_one_on_a_negative_eigenvalue_is_diagnosed_in_one_line():
    matrix = random_symmetric([-0.3, 0.2, 1.0, 2.5], seed=6)
    report = analyse(matrix_operator(matrix), neumann_alpha=1.0)
    diagnosis = report.neumann
    assert not diagnosis.converges and diagnosis.safe_alpha_max is None
    message = diagnosis.message
    assert "\n" not in message and message.startswith("diverges:")
    assert "λmin = -0.3" in message and "largest safe α: none" in message
    dense_radius = float(torch.linalg.eigvalsh(torch.eye(4, dtype=DOUBLE) - matrix).abs().max())
    assert diagnosis.spectral_radius == pytest.approx(dense_radius, rel=1e-12)
    _, info = Neumann(terms=101, alpha=1.0)(
        lambda v: [matrix @ v[0]], [torch.ones(4, dtype=DOUBLE)]
    )
    assert info.status == Status.DIVERGED, "the solver agrees"
    assert report.cg.iterations is None and "indefinite" in report.cg.message


def test_neumann_step_too_large_and_a_safe_step():
    matrix = random_symmetric([0.5, 1.0, 4.0, 8.0], seed=7)
    too_large = neumann_diagnosis(0.5, 8.0, alpha=1.0)
    assert too_large.message.startswith("diverges: α = 1 exceeds the largest safe α")
    assert too_large.safe_alpha_max == pytest.approx(0.25) and too_large.spectral_radius == 7.0
    safe = neumann_diagnosis(0.5, 8.0, alpha=0.2)
    dense_radius = torch.linalg.eigvalsh(torch.eye(4, dtype=DOUBLE) - 0.2 * matrix).abs().max()
    assert safe.converges and safe.spectral_radius == pytest.approx(float(dense_radius))
    b = [torch.ones(4, dtype=DOUBLE)]
    _, info = Neumann(terms=401, alpha=0.2, tol=1e-10)(lambda v: [matrix @ v[0]], b)
    assert info.status == Status.CONVERGED
    _, info = Neumann(terms=51, alpha=1.0)(lambda v: [matrix @ v[0]], b)
    assert info.status == Status.DIVERGED
    singular = neumann_diagnosis(1e-18, 3.0, alpha=0.1, zero_tolerance=1e-15)
    assert singular.message.startswith("stalls:") and not singular.converges
    with pytest.raises(ValueError, match="neumann_alpha"):
        neumann_diagnosis(0.5, 8.0, alpha=0.0)


def test_cg_prediction_is_the_chebyshev_bound():
    assert cg_iterations(100.0, 1e-6) == math.ceil(5 * math.log(2e6)) == 73
    diagnosis = cg_diagnosis(0.5, 50.0, 1e-6)
    assert diagnosis.condition == 100.0 and diagnosis.iterations == 73
    assert cg_diagnosis(0.0, 50.0, 1e-6, zero_tolerance=1e-12).iterations is None


def test_the_report_is_plain_json():
    matrix = random_symmetric([0.0, 0.0, 1.0, 2.0], seed=8)
    report = analyse(matrix_operator(matrix))
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["spectrum"]["rank"] == 2 and data["spectrum"]["condition_full"] == "inf"
    assert data["spectrum"]["condition_nonzero"] == pytest.approx(2.0)
    assert data["neumann"]["message"].startswith("stalls:")
    assert len(data["eigenvalues"]) == 4
