"""Neumann's λ̂max for α = "auto": a few Lanczos steps (float64, dense eigendecompositions)."""

import pytest
import torch

from hpo_cli import Neumann
from hpo_cli.core.solvers import estimate_largest_eigenvalue, lanczos_extremes
from hpo_cli.core.vectors import dot, norm, scale

DT = torch.float64


def symmetric(eigenvalues, seed=0):
    gen = torch.Generator().manual_seed(seed)
    dim = len(eigenvalues)
    basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=DT))
    return basis @ torch.diag(torch.tensor(eigenvalues, dtype=DT)) @ basis.T


def matvec_of(matrix):
    return lambda v: [matrix @ v[0]]


def power_iteration_estimate(matrix, start, steps):
    """The Rayleigh quotient after ``steps`` products of power iteration (the old estimate)."""
    vector = scale([start], 1.0 / float(norm([start])))
    for _ in range(steps - 1):
        vector = [matrix @ vector[0]]
        vector = scale(vector, 1.0 / float(norm(vector)))
    return float(dot(vector, [matrix @ vector[0]]))


SPECTRUM = torch.linspace(-2.0, 10.0, 60).tolist()  # indefinite, slow for power iteration


@pytest.mark.parametrize("steps", [2, 4, 8, 16])
def test_ritz_values_lie_inside_the_spectrum_and_beat_power_iteration(steps):
    matrix = symmetric(SPECTRUM)
    start = torch.ones(60, dtype=DT)
    estimate = lanczos_extremes(matvec_of(matrix), [start], steps)
    assert estimate.matvecs == steps
    assert -2.0 - 1e-12 <= estimate.smallest <= estimate.largest <= 10.0 + 1e-12
    assert estimate.largest >= power_iteration_estimate(matrix, start, steps) - 1e-12


def test_a_few_steps_find_lambda_max_where_power_iteration_is_far_off():
    matrix = symmetric(SPECTRUM)
    start = torch.ones(60, dtype=DT)
    estimate = lanczos_extremes(matvec_of(matrix), [start], 12)
    assert estimate.largest == pytest.approx(10.0, rel=1e-2)
    assert power_iteration_estimate(matrix, start, 12) < 0.97 * 10.0  # gap 0.2: slow


def test_an_invariant_krylov_space_gives_exact_eigenvalues_and_stops():
    matrix = torch.diag(torch.tensor([1.0, 3.0, 7.0, 2.0], dtype=DT))
    start = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=DT)  # spans 3 eigenvectors
    estimate = lanczos_extremes(matvec_of(matrix), [start], 10, ritz_vector=True)
    # the breakdown after 3 products stops the recurrence; the Ritz vector's pass takes 2 more
    assert estimate.matvecs == 3 + 2
    assert (estimate.smallest, estimate.largest) == pytest.approx((1.0, 7.0), rel=1e-12)
    torch.testing.assert_close(
        estimate.vector[0].abs(), torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=DT), atol=1e-10, rtol=0
    )


def test_reading_the_coefficients_once_gives_the_same_estimate(monkeypatch):
    """Off the CPU the coefficients are read once, after all steps; T is then cut at the
    breakdown, so the estimate is the one of reading each step (the products past it count)."""
    from hpo_cli.core.solvers import lanczos_estimate as module

    for matrix, start in [
        (symmetric(SPECTRUM), torch.ones(60, dtype=DT)),
        (torch.diag(torch.tensor([1.0, 3.0, 7.0, 2.0], dtype=DT)), torch.ones(4, dtype=DT)),
    ]:
        each = lanczos_extremes(matvec_of(matrix), [start], 8, ritz_vector=True)
        monkeypatch.setattr(module, "CPU_READS_EACH_STEP", False)
        once = lanczos_extremes(matvec_of(matrix), [start], 8, ritz_vector=True)
        monkeypatch.setattr(module, "CPU_READS_EACH_STEP", True)
        ritz_pass = len(once.tridiagonal) - 1  # the Ritz vector's second pass
        assert once.matvecs == 8 + ritz_pass and each.matvecs == min(8, len(start)) + ritz_pass
        assert (once.largest, once.smallest) == pytest.approx(
            (each.largest, each.smallest), rel=1e-12
        )
        torch.testing.assert_close(once.vector[0], each.vector[0], atol=1e-10, rtol=0)


def test_the_ritz_vector_is_a_unit_vector_whose_residual_shrinks_with_the_steps():
    matrix = symmetric(SPECTRUM)
    residuals = []
    for steps in (4, 12, 30):
        estimate = lanczos_extremes(matvec_of(matrix), [torch.ones(60, dtype=DT)], steps, True)
        vector = estimate.vector[0]
        assert float(torch.linalg.vector_norm(vector)) == pytest.approx(1.0, rel=1e-12)
        assert float(vector @ matrix @ vector) == pytest.approx(estimate.largest, rel=1e-10)
        residuals.append(
            float(torch.linalg.vector_norm(matrix @ vector - estimate.largest * vector))
        )
    assert residuals[0] > residuals[1] > residuals[2]


def test_the_dominant_value_is_signed_and_a_non_finite_product_gives_nan():
    assert estimate_largest_eigenvalue(
        matvec_of(torch.diag(torch.tensor([1.0, -5.0], dtype=DT))), [torch.ones(2, dtype=DT)], 5
    ) == (pytest.approx(-5.0, rel=1e-12), 2)
    estimate = lanczos_extremes(lambda v: [v[0] * float("nan")], [torch.ones(3, dtype=DT)], 4)
    assert estimate.largest != estimate.largest  # nan


def test_neumann_auto_uses_the_largest_ritz_value():
    matrix, b = symmetric(SPECTRUM, seed=1), torch.ones(60, dtype=DT)
    _, info = Neumann(terms=4, lanczos_iterations=12)(matvec_of(matrix), [b])
    _, summed = Neumann(terms=4, lanczos_iterations=12, krylov_series=True)(matvec_of(matrix), [b])
    expected = lanczos_extremes(matvec_of(matrix), [b], 12).largest
    assert info.extras["lambda_max_estimate"] == pytest.approx(expected, rel=1e-12)
    assert info.extras["alpha"] == pytest.approx(1.0 / expected, rel=1e-12)
    assert info.matvecs == 12 + 3 and summed.matvecs == 12  # krylov_series: no product
    assert "series_from_lanczos_basis" not in info.extras


def classic(terms, alpha, tol=0.0):
    """The same series, one product per term."""
    return Neumann(terms=terms, alpha=alpha, tol=tol)


def indefinite(lowest, seed=2):
    return symmetric(torch.linspace(lowest, 5.0, 40).tolist(), seed=seed)


@pytest.mark.parametrize(
    ("matrix", "terms", "tol", "status"),
    [
        (symmetric(torch.logspace(-1, 1, 40).tolist(), seed=3), 7, 0.0, "max_iterations"),
        (symmetric(torch.logspace(-1, 1, 40).tolist(), seed=3), 10, 0.5, "converged"),
        (indefinite(-1.5), 6, 0.0, "unstable"),
        (indefinite(-4.0), 10, 0.0, "diverged"),
    ],
)
def test_the_series_in_the_krylov_space_is_the_product_by_product_series(
    matrix, terms, tol, status
):
    """krylov_series sums the K-term series from the Lanczos run (no product) when K ≤ m: the
    same sum, status, term count and spectral-radius estimate as K − 1 products (float64)."""
    b = torch.randn(40, generator=torch.Generator().manual_seed(4), dtype=DT)
    solver = Neumann(terms=terms, tol=tol, lanczos_iterations=10, krylov_series=True)
    x, info = solver(matvec_of(matrix), [b])
    y, reference = classic(terms, info.extras["alpha"], tol)(matvec_of(matrix), [b])
    assert info.extras["series_from_lanczos_basis"] == 1.0 and info.matvecs == 10
    assert info.status == reference.status == status
    assert info.iterations == reference.iterations
    assert info.extras["spectral_radius_estimate"] == pytest.approx(
        reference.extras["spectral_radius_estimate"], rel=1e-9
    )
    torch.testing.assert_close(x[0], y[0], rtol=1e-10, atol=1e-12)


def test_the_krylov_sum_holds_in_float32_after_orthogonality_is_lost():
    """30 Lanczos steps on a spectrum with an isolated top: the basis loses orthogonality
    (|q_1ᵀq_30| ≫ ε), yet the sum matches the product-by-product series to float32 rounding,
    because it uses only the recurrence A q_j = β_{j−1} q_{j−1} + a_j q_j + β_j q_{j+1}."""
    values = [*torch.linspace(0.1, 1.0, 199).tolist(), 50.0]
    matrix = symmetric(values, seed=5).float()
    b = torch.ones(200)
    run = lanczos_extremes(matvec_of(matrix), [b], 30, keep_basis=30)
    (q_1, *_, q_30), scales = run.leading(30)
    assert abs(float(q_1[0] @ q_30[0]) * scales[0]) > 1e-4  # orthogonality lost
    x, info = Neumann(terms=21, lanczos_iterations=30, krylov_series=True)(matvec_of(matrix), [b])
    y, _ = classic(21, info.extras["alpha"])(matvec_of(matrix), [b])
    assert info.extras["series_from_lanczos_basis"] == 1.0
    torch.testing.assert_close(x[0], y[0], rtol=1e-4, atol=1e-5)


def test_as_many_terms_as_lanczos_steps_take_one_product_each():
    matrix, b = symmetric(SPECTRUM, seed=1), torch.ones(60, dtype=DT)
    _, info = Neumann(terms=11, lanczos_iterations=10, krylov_series=True)(matvec_of(matrix), [b])
    assert "series_from_lanczos_basis" not in info.extras and info.matvecs == 20


@pytest.mark.parametrize("krylov_series", [False, True])
def test_only_a_cold_estimate_from_b_sums_the_series_in_its_krylov_space(krylov_series):
    """A warm start asks for a Ritz vector (m − 1 more products): that alone must not switch the
    series to the Krylov sum, and a refresh from the kept Ritz vector never does."""
    matrix, b = symmetric(SPECTRUM, seed=1), torch.ones(60, dtype=DT)
    solver = Neumann(terms=4, warm_start=True, refresh_every=1, krylov_series=krylov_series)
    _, cold, state = solver.solve(matvec_of(matrix), [b], solver.init_state())
    _, warm, _ = solver.solve(matvec_of(matrix), [b], state)
    assert cold.extras.get("series_from_lanczos_basis") == (1.0 if krylov_series else None)
    assert cold.matvecs == (10 if krylov_series else 13) + 9
    assert "series_from_lanczos_basis" not in warm.extras
    assert warm.matvecs == (solver.refresh_iterations + 2) + 3


def test_the_kept_basis_is_the_lanczos_vectors_without_a_copy_of_the_start():
    """keep_basis=K keeps K − 1 weight-sized vectors, q_2..q_K: q_1 = s/‖s‖ comes from the
    caller's s itself, and with it the first K vectors are orthonormal (float64, a small run)."""
    matrix = symmetric(torch.linspace(1.0, 10.0, 12).tolist(), seed=3)
    start = [torch.arange(1.0, 13.0, dtype=torch.float64)]
    run = lanczos_extremes(matvec_of(matrix), start, 6, keep_basis=4)
    assert run.start is start and len(run.basis) == 3
    vectors, scales = run.leading(4)
    q = torch.stack([vector[0] * sigma for vector, sigma in zip(vectors, scales, strict=True)])
    torch.testing.assert_close(q @ q.T, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)


def test_the_ritz_vector_is_the_combination_of_the_kept_basis():
    """The Ritz vector from the second pass of the recurrence is Σ_j y_j q_j over the Lanczos
    vectors the first pass would keep (y: T's top eigenvector), for m − 1 more products."""
    matrix = symmetric(torch.linspace(1.0, 10.0, 12).tolist(), seed=4)
    start = [torch.arange(1.0, 13.0, dtype=DT)]
    kept = lanczos_extremes(matvec_of(matrix), start, 6, keep_basis=6)
    ritz = lanczos_extremes(matvec_of(matrix), start, 6, ritz_vector=True)
    vectors, scales = kept.leading(6)
    y = torch.linalg.eigh(kept.tridiagonal).eigenvectors[:, -1]
    expected = sum(float(w) * s * v[0] for w, s, v in zip(y, scales, vectors, strict=True))
    expected = expected / expected.norm()
    torch.testing.assert_close(ritz.vector[0], expected, rtol=0, atol=1e-12)
    assert (ritz.matvecs, kept.matvecs) == (6 + 5, 6)
