"""The solvers read their stopping tests on the host only every few iterations off the CPU
(``CHECK_EVERY``): with that schedule forced on the CPU, every answer, status and iteration count
is the one a check after every iteration gives (float64, small dense matrices)."""

import pytest
import torch

from hpo_cli import ConjugateGradient, Neumann
from hpo_cli.core.solvers import cg, neumann

DT = torch.float64


def diag(*values):
    return torch.diag(torch.tensor(values, dtype=DT))


def spd(dim=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=DT))
    return basis @ torch.diag(torch.logspace(-1, 1, dim, dtype=DT)) @ basis.T


CASES = [  # (solver, matrix, b): converged, max_iterations, diverged / negative curvature
    (Neumann(terms=401, alpha=0.09, tol=1e-8), spd(), torch.ones(12, dtype=DT)),
    (Neumann(terms=8, alpha=0.09), spd(), torch.ones(12, dtype=DT)),
    (Neumann(terms=201, alpha=1.0), diag(0.5, 2.1), torch.tensor([1.0, 1e-3], dtype=DT)),
    (ConjugateGradient(max_iter=50, tol=1e-9), spd(), torch.ones(12, dtype=DT)),
    (ConjugateGradient(max_iter=5, tol=0.0), spd(), torch.ones(12, dtype=DT)),
    (ConjugateGradient(max_iter=10), diag(1.0, -1.0, 2.0), torch.ones(3, dtype=DT)),
    (ConjugateGradient(max_iter=10), diag(1.0, 2.0), torch.tensor([1.0, 0.0], dtype=DT)),
]


@pytest.mark.parametrize(("solver", "matrix", "b"), CASES)
def test_checking_every_few_iterations_changes_nothing_but_the_products(
    solver, matrix, b, monkeypatch
):
    def solve():
        return solver(lambda v: [matrix @ v[0]], [b])

    x_each, info_each = solve()
    for module in (neumann, cg):
        monkeypatch.setattr(module, "CPU_CHECK_EVERY", module.CHECK_EVERY)
    x_few, info_few = solve()
    assert info_few.status == info_each.status and info_few.iterations == info_each.iterations
    torch.testing.assert_close(x_few[0], x_each[0], rtol=1e-12, atol=0)
    assert info_each.matvecs <= info_few.matvecs < info_each.matvecs + neumann.CHECK_EVERY
    if info_each.residual is not None:  # CG's
        assert info_few.residual == pytest.approx(info_each.residual, rel=1e-9, abs=0)
