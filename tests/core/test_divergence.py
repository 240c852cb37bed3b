"""Solvers on Hessians where the Neumann series cannot converge or CG meets negative curvature.

A quadratic toy with an explicit symmetric A: L_t(w, λ) = ½wᵀAw − λ uᵀw, L_v(w) = ½‖w − t‖²,
so H = A, ∂²L_t/∂λ∂w = −u and the hypergradient for x ≈ A⁻¹(w − t) is uᵀx.
"""

import math

import pytest
import torch

from hpo_cli import ConjugateGradient, HypergradientError, Neumann, hypergradient
from hpo_cli.core.vectors import all_finite

DT = torch.float64


def diag(*values):
    return torch.diag(torch.tensor(values, dtype=DT))


def matvec_of(matrix):
    return lambda v: [matrix @ v[0]]


def vec(*values):
    return [torch.tensor(values, dtype=DT)]


def quadratic(matrix):
    """(w, λ, L_t, L_v) for the toy with H = matrix, at w = 0 (so b = −t)."""
    d = matrix.shape[0]
    u = torch.linspace(1.0, 2.0, d, dtype=DT)
    target = -torch.ones(d, dtype=DT)
    w = torch.zeros(d, dtype=DT, requires_grad=True)
    lam = torch.tensor(0.5, dtype=DT, requires_grad=True)
    train = 0.5 * w @ matrix @ w - lam * (u @ w)
    val = 0.5 * ((w - target) ** 2).sum()
    return w, lam, train, val


# ---- Neumann with λmax > 2/α ------------------------------------------------------------------

STEEP = diag(0.5, 3.0)  # α = 1: eigenvalues of I − αA are 0.5 and −2, ρ = 2


def test_neumann_solver_reports_divergence_when_step_too_large():
    _, info = Neumann(terms=31, alpha=1.0)(matvec_of(STEEP), vec(1.0, 1.0))
    assert info.status == "diverged"
    assert info.diverged


def test_neumann_divergence_stops_early():
    _, info = Neumann(terms=31, alpha=1.0)(matvec_of(STEEP), vec(1.0, 1.0))
    assert info.iterations < 30


HIDDEN = diag(0.5, 2.1)  # α = 1: I − αA = diag(0.5, −1.1), ρ = 1.1
HIDDEN_B = (1.0, 1e-3)  # almost orthogonal to the bad eigenvector


def test_neumann_detects_divergence_hidden_in_a_small_component():
    """The bad component 1.1ᵏ·10⁻³ needs ~73 terms to dominate; the solver must notice then."""
    _, info = Neumann(terms=201, alpha=1.0)(matvec_of(HIDDEN), vec(*HIDDEN_B))
    assert info.diverged
    assert 3 < info.iterations < 200


def test_neumann_before_the_blow_up_returns_the_partial_sum_and_flags_rho():
    """After 21 terms the growing component is still tiny: the truncated sum is returned (the
    closed-form partial sum), with a spectral-radius estimate >= 1 to warn about it."""
    terms = 21
    x, info = Neumann(terms=terms, alpha=1.0)(matvec_of(HIDDEN), vec(*HIDDEN_B))
    partial = [
        sum((1 - lam) ** k for k in range(terms)) * entry
        for lam, entry in zip((0.5, 2.1), HIDDEN_B, strict=True)
    ]
    assert not info.diverged and info.status == "unstable"
    assert info.extras["spectral_radius_estimate"] >= 1.0
    torch.testing.assert_close(x[0], torch.tensor(partial, dtype=DT), rtol=1e-12, atol=0)


def test_neumann_spectral_radius_estimate_approaches_rho_from_below():
    """α = 0.5 on diag(0.5, 3): I − αA = diag(0.75, −0.5), ρ = 0.75."""
    _, info = Neumann(terms=101, alpha=0.5)(matvec_of(diag(0.5, 3.0)), vec(1.0, 1.0))
    assert 0.74 < info.extras["spectral_radius_estimate"] <= 0.75 * (1 + 1e-12)


def test_neumann_step_just_below_two_over_lambda_max_converges():
    matrix = diag(0.5, 3.0)
    alpha = 1.9 / 3.0
    x, info = Neumann(terms=401, alpha=alpha)(matvec_of(matrix), vec(1.0, 1.0))
    assert not info.diverged
    torch.testing.assert_close(x[0], torch.tensor([2.0, 1.0 / 3.0], dtype=DT), rtol=1e-10, atol=0)


def test_hypergradient_raises_on_neumann_divergence():
    w, lam, train, val = quadratic(STEEP)
    with pytest.raises(HypergradientError) as caught:
        hypergradient(train, val, [w], [lam], Neumann(terms=31, alpha=1.0))
    assert caught.value.info.diverged


def test_hypergradient_reports_divergence_when_asked_not_to_raise():
    w, lam, train, val = quadratic(STEEP)
    result = hypergradient(
        train, val, [w], [lam], Neumann(terms=31, alpha=1.0), raise_on_failure=False
    )
    assert result.failure is not None
    assert result.solve.diverged


def test_no_residual_is_reported_for_a_diverged_solve():
    w, lam, train, val = quadratic(STEEP)
    result = hypergradient(
        train, val, [w], [lam], Neumann(terms=31, alpha=1.0), raise_on_failure=False
    )
    assert result.residual is None


# ---- seed 000: Neumann with α = 1 on a Hessian with a negative eigenvalue -----------------------

NEGATIVE = diag(0.5, -0.2)  # I − A has eigenvalues 0.5 and 1.2


def test_neumann_with_unit_step_diverges_on_negative_eigenvalue():
    _, info = Neumann(terms=51, alpha=1.0)(matvec_of(NEGATIVE), vec(1.0, 1.0))
    assert info.diverged


def test_hypergradient_raises_for_seed_000_configuration():
    w, lam, train, val = quadratic(NEGATIVE)
    with pytest.raises(HypergradientError, match="diverged"):
        hypergradient(train, val, [w], [lam], Neumann(terms=51, alpha=1.0))


MILD = diag(0.5, -0.1)  # α = 1: I − A = diag(0.5, 1.1): terms grow 10% per term
MILD_B = (0.2, 1.0)


def test_a_three_term_series_growing_slowly_is_unstable_not_diverged():
    """The paper's 3-term series on an indefinite H: ‖t_3‖/‖t_0‖ = 1.30 is no explosion; the
    closed-form partial sum is returned, flagged ``unstable`` (ρ̂ = 1.1 ≥ 1)."""
    x, info = Neumann(terms=4, alpha=1.0)(matvec_of(MILD), vec(*MILD_B))
    assert info.status == "unstable" and not info.diverged
    assert info.extras["spectral_radius_estimate"] >= 1.0
    partial = [
        sum((1 - lam) ** k for k in range(4)) * b
        for lam, b in zip((0.5, -0.1), MILD_B, strict=True)
    ]
    torch.testing.assert_close(x[0], torch.tensor(partial, dtype=DT), rtol=1e-12, atol=0)


def test_a_series_growing_like_seed_000s_is_diverged_within_three_terms():
    """Seed 000's series grew 2.7× per term: 2.7³ ≈ 20 times the first term by term 3."""
    _, info = Neumann(terms=4, alpha=1.0)(matvec_of(diag(0.5, -1.7)), vec(0.0, 1.0))
    assert info.diverged and info.iterations == 3
    assert "grew to 19.7× the first" in info.message


def test_the_growth_limit_decides_divergence():
    """‖t_3‖/‖t_0‖ = 1.331 on the mild series: diverged only below that limit."""
    solve = matvec_of(MILD), vec(0.0, 1.0)
    assert Neumann(terms=4, alpha=1.0, growth_limit=1.3)(*solve)[1].diverged
    assert not Neumann(terms=4, alpha=1.0, growth_limit=1.34)(*solve)[1].diverged
    with pytest.raises(ValueError, match="growth_limit must be > 1"):
        Neumann(growth_limit=1.0)


# ---- Neumann α = "auto" with a dominant negative eigenvalue -----------------------------------

DOMINANT_NEGATIVE = diag(1.0, -5.0)


def test_neumann_auto_reports_divergence_for_dominant_negative_eigenvalue():
    _, info = Neumann(terms=21, alpha="auto")(matvec_of(DOMINANT_NEGATIVE), vec(1.0, 1.0))
    assert info.diverged
    assert info.extras["lambda_max_estimate"] == pytest.approx(-5.0, rel=1e-12)


def test_hypergradient_raises_for_neumann_auto_on_dominant_negative_eigenvalue():
    w, lam, train, val = quadratic(DOMINANT_NEGATIVE)
    with pytest.raises(HypergradientError):
        hypergradient(train, val, [w], [lam], Neumann(terms=21, alpha="auto"))


def test_neumann_auto_reports_divergence_for_negative_definite_hessian():
    """A concave training loss (w at a maximum): λ̂max < 0, so no step α > 0 exists."""
    _, info = Neumann(terms=21, alpha="auto")(matvec_of(diag(-1.0, -5.0)), vec(1.0, 1.0))
    assert info.diverged


def test_neumann_auto_diverges_on_indefinite_hessian_with_positive_dominant_eigenvalue():
    """λ̂max = 5 > 0 gives α = 1/5, but the eigenvalue −1 makes 1 − α(−1) = 1.2 > 1."""
    _, info = Neumann(terms=81, alpha="auto")(matvec_of(diag(5.0, -1.0)), vec(1.0, 1.0))
    assert info.diverged


# ---- CG on an indefinite H --------------------------------------------------------------------

INDEFINITE = diag(3.0, 2.0, -1.0)


def test_cg_reports_negative_curvature():
    _, info = ConjugateGradient(tol=1e-12)(matvec_of(INDEFINITE), vec(1.0, 1.0, 1.0))
    assert info.status == "negative_curvature"


def test_cg_keeps_the_last_finite_iterate_on_negative_curvature():
    """First step: α = bᵀb / bᵀAb = 3/4, so x₁ = ¾ b; the second direction has pᵀAp < 0."""
    x, info = ConjugateGradient(tol=1e-12)(matvec_of(INDEFINITE), vec(1.0, 1.0, 1.0))
    assert info.iterations == 1
    torch.testing.assert_close(x[0], torch.full((3,), 0.75, dtype=DT), rtol=1e-14, atol=0)


def test_cg_stops_on_zero_curvature_without_dividing():
    x, info = ConjugateGradient()(matvec_of(diag(1.0, -1.0)), vec(1.0, 1.0))
    assert info.status == "negative_curvature"
    assert bool(torch.isfinite(x[0]).all())


def test_hypergradient_with_cg_on_indefinite_hessian_is_finite():
    w, lam, train, val = quadratic(INDEFINITE)
    result = hypergradient(train, val, [w], [lam], ConjugateGradient(tol=1e-12))
    assert result.solve.status == "negative_curvature"
    assert math.isfinite(float(result.grads[0]))


def test_damping_cures_negative_curvature_in_cg():
    """(A + 2I) = diag(5, 4, 1) is positive definite: CG converges to its solution."""
    x, info = ConjugateGradient(tol=1e-13, damping=2.0)(matvec_of(INDEFINITE), vec(1.0, 1.0, 1.0))
    assert info.converged
    torch.testing.assert_close(
        x[0], torch.tensor([0.2, 0.25, 1.0], dtype=DT), rtol=1e-12, atol=1e-14
    )


# ---- non-finite inputs -------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.1, "auto"])
def test_neumann_reports_a_non_finite_right_hand_side_as_diverged(alpha):
    x, info = Neumann(terms=6, alpha=alpha)(matvec_of(diag(1.0, 2.0)), vec(1.0, math.nan))
    assert info.diverged and info.matvecs == 0
    assert not all_finite(x)


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_neumann_auto_reports_a_non_finite_hessian_as_diverged(bad):
    _, info = Neumann(terms=6, alpha="auto")(matvec_of(diag(1.0, bad)), vec(1.0, 1.0))
    assert info.diverged


def test_neumann_reports_a_non_finite_product_as_diverged():
    _, info = Neumann(terms=6, alpha=0.1)(matvec_of(diag(1.0, math.inf)), vec(1.0, 1.0))
    assert info.diverged and info.iterations == 1
