"""``curvature=ggn``: the hypergradient's solvers on the Gauss-Newton matrix of the data loss plus
the penalty's exact Hessian, against a dense GGN (+ penalty Hessian) solve in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hpo_cli import ConjugateGradient, Exact, Neumann, hypergradient
from hpo_cli.core.curvature import curvature_matvec
from hpo_cli.core.hvp import TrainingCurvature, dense_matrix
from hpo_cli.core.vectors import flatten
from hpo_cli.hyper import WeightDecay
from hpo_cli.optim.local_model import loss_and_outputs
from tests.core.test_ggn import dense_ggn

DT = torch.float64


def setup():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4)).to(
        DT
    )
    hyper = WeightDecay(model, "layer", init=0.01, data=None)
    gen = torch.Generator().manual_seed(1)
    x, x_val = (
        torch.randn(9, 3, generator=gen, dtype=DT),
        torch.randn(6, 3, generator=gen, dtype=DT),
    )
    y, y_val = torch.randint(0, 4, (9,), generator=gen), torch.randint(0, 4, (6,), generator=gen)

    def losses():
        train, outputs = loss_and_outputs(
            model, lambda: F.cross_entropy(model(x), y) + hyper.penalty(model)
        )
        return train, F.cross_entropy(model(x_val), y_val), outputs

    return model, hyper, x, y, losses


def dense_reference(model, hyper, x, y, losses):
    """∂L_v/∂λ − Mᵀ (G + P)⁻¹ ∂L_v/∂w with every matrix formed densely."""
    params, hparams = list(model.parameters()), list(hyper.parameters())
    ggn = dense_ggn(model, x, lambda flat: F.cross_entropy(flat.reshape(len(y), 4), y))
    penalty = dense_matrix(TrainingCurvature(hyper.penalty(model), params).hvp, params)
    train, val, _ = losses()
    b = flatten(torch.autograd.grad(val, params))
    gradient = flatten(torch.autograd.grad(train, params, create_graph=True))
    mixed = torch.stack(
        [flatten(torch.autograd.grad(g, hparams, retain_graph=True)) for g in gradient]
    )  # (d, p): ∂²L_t/∂w∂λ
    matrix = ggn + penalty
    return -mixed.T @ torch.linalg.solve(matrix, b), matrix


@pytest.mark.parametrize("solver", [Exact(), ConjugateGradient(max_iter=200, tol=1e-14)])
def test_ggn_hypergradient_matches_the_dense_solve(solver):
    model, hyper, x, y, losses = setup()
    expected, matrix = dense_reference(model, hyper, x, y, losses)
    assert float(torch.linalg.eigvalsh(matrix)[0]) > 0  # PSD GGN + a positive L2 Hessian
    params, hparams = list(model.parameters()), list(hyper.parameters())
    train, val, outputs = losses()
    ggn = curvature_matvec("ggn", train, params, outputs, hyper.penalty(model))
    result = hypergradient(train, val, params, hparams, solver, curvature=ggn)
    torch.testing.assert_close(flatten(result.grads), expected, rtol=1e-9, atol=1e-12)
    hessian = hypergradient(*losses()[:2], params, hparams, Exact())
    assert not torch.allclose(flatten(hessian.grads), expected, rtol=1e-3)  # a different matrix


def test_ggn_keeps_neumann_convergent_where_the_hessian_is_indefinite():
    model, hyper, *_, losses = setup()
    params = list(model.parameters())
    train = losses()[0]
    hessian = dense_matrix(TrainingCurvature(train, params).hvp, params)
    assert float(torch.linalg.eigvalsh(hessian)[0]) < 0  # random weights: H is indefinite
    train, val, outputs = losses()
    ggn = curvature_matvec("ggn", train, params, outputs, hyper.penalty(model))
    result = hypergradient(
        train, val, params, list(hyper.parameters()), Neumann(terms=31), curvature=ggn
    )
    assert result.failure is None and result.solve.status in ("max_iterations", "converged")


def test_unknown_curvature_and_missing_outputs_are_clear_errors():
    model, *_, losses = setup()
    train = losses()[0]
    with pytest.raises(ValueError, match="curvature='fisher' is unknown"):
        curvature_matvec("fisher", train, list(model.parameters()), None, 0.0)
    with pytest.raises(ValueError, match="needs the network outputs"):
        curvature_matvec("ggn", train, list(model.parameters()), None, 0.0)
    assert curvature_matvec("hessian", train, list(model.parameters()), None, 0.0) is None
