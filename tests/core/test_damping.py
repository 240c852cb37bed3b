"""Damping written once (:func:`hpo_cli.core.hvp.damped`) and used by every solver: each solves
(H + μI) x = b, checked against a dense float64 solve, on an indefinite H that only the damping
makes positive definite."""

from __future__ import annotations

import pytest
import torch

from hpo_cli.core.hvp import damped
from hpo_cli.core.solvers import ConjugateGradient, Exact, Neumann
from hpo_cli.core.solvers.base import Status

DIM = 6
MU = 2.5  # > −λmin = 1.5


def indefinite() -> torch.Tensor:
    """A symmetric 6×6 matrix with eigenvalues −1.5 … 4 in a random orthonormal basis."""
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=generator, dtype=torch.float64))
    eigenvalues = torch.tensor([-1.5, -0.5, 0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    return basis @ torch.diag(eigenvalues) @ basis.T


MATRIX = indefinite()
B = [torch.linspace(-1.0, 1.0, DIM, dtype=torch.float64)]
EXPECTED = torch.linalg.solve(MATRIX + MU * torch.eye(DIM, dtype=torch.float64), B[0])


def matvec(vector):
    return [MATRIX @ vector[0]]


def test_damped_adds_mu_times_the_vector_and_zero_is_the_product_itself():
    v = [torch.arange(DIM, dtype=torch.float64)]
    (product,) = damped(matvec, MU)(v)
    torch.testing.assert_close(product, MATRIX @ v[0] + MU * v[0], rtol=1e-15, atol=1e-15)
    assert damped(matvec, 0.0) is matvec


@pytest.mark.parametrize(
    "solver",
    [
        Neumann(terms=401, alpha=0.2, damping=MU, tol=1e-14),
        Neumann(terms=401, alpha="auto", damping=MU, tol=1e-14),
        ConjugateGradient(max_iter=DIM, tol=1e-13, damping=MU),
        Exact(damping=MU),
    ],
    ids=["neumann", "neumann-auto", "cg", "exact"],
)
def test_every_solver_solves_the_damped_system(solver):
    (x,), info = solver(matvec, B)
    assert info.status == Status.CONVERGED, info.message
    torch.testing.assert_close(x, EXPECTED, rtol=1e-10, atol=1e-12)
    assert info.extras["damping"] == MU


def test_undamped_neumann_on_an_indefinite_matrix_points_at_the_damping_option():
    _, info = Neumann(terms=201, alpha=0.2)(matvec, B)
    assert info.status == Status.DIVERGED
    assert "damping > 0 (solver.damping)" in info.message
    assert "add damping to H" not in info.message


def test_negative_damping_is_refused():
    with pytest.raises(ValueError, match=r"neumann\.damping must be >= 0"):
        Neumann(damping=-1.0)
