"""Gauss-Newton products against Jᵀ H_z J formed densely with torch.func, in float64."""

from __future__ import annotations

import torch
from torch.func import functional_call, hessian, jacrev

from hpo_cli.core.hvp import GaussNewtonCurvature, TrainingCurvature, dense_matrix

DT = torch.float64


def dense_ggn(model: torch.nn.Module, inputs: torch.Tensor, loss_of_outputs) -> torch.Tensor:
    names = [name for name, _ in model.named_parameters()]
    params = [p.detach() for p in model.parameters()]

    def flat_outputs(*weights):
        return functional_call(model, dict(zip(names, weights, strict=True)), (inputs,)).reshape(-1)

    outputs = flat_outputs(*params)
    blocks = jacrev(flat_outputs, argnums=tuple(range(len(params))))(*params)
    jacobian = torch.cat([block.reshape(outputs.numel(), -1) for block in blocks], dim=1)
    output_hessian = hessian(loss_of_outputs)(outputs)
    return jacobian.T @ output_hessian @ jacobian


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    layers = [torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4)]
    return torch.nn.Sequential(*layers).to(DT)


def test_ggn_of_cross_entropy_equals_dense_jt_h_j():
    model = small_model()
    inputs = torch.randn(7, 3, dtype=DT)
    labels = torch.randint(0, 4, (7,))

    def loss(flat):
        return torch.nn.functional.cross_entropy(flat.reshape(7, 4), labels)

    outputs = model(inputs)
    curvature = GaussNewtonCurvature(outputs, loss(outputs.reshape(-1)), list(model.parameters()))
    ggn = dense_matrix(curvature.gvp, list(model.parameters()))
    expected = dense_ggn(model, inputs, loss)
    torch.testing.assert_close(ggn, expected, rtol=1e-12, atol=1e-14)
    assert curvature.gvp_count == ggn.shape[0]


def test_ggn_is_positive_semi_definite_where_the_hessian_is_not():
    model = small_model()
    inputs, targets = torch.randn(6, 3, dtype=DT), torch.randn(6, 4, dtype=DT)
    outputs = model(inputs)
    loss = 0.5 * (outputs - targets).square().sum()
    params = list(model.parameters())
    ggn = dense_matrix(GaussNewtonCurvature(outputs, loss, params).gvp, params)
    torch.testing.assert_close(
        ggn, dense_ggn(model, inputs, lambda z: 0.5 * (z - targets.reshape(-1)).square().sum())
    )
    assert torch.linalg.eigvalsh(ggn).min() > -1e-12
    hessian_matrix = dense_matrix(
        TrainingCurvature(model(inputs).sub(targets).square().sum().mul(0.5), params).hvp, params
    )
    assert torch.linalg.eigvalsh(hessian_matrix).min() < -1e-6, (
        "the example's Hessian is indefinite"
    )


def test_ggn_of_a_linear_model_with_squared_error_is_its_hessian():
    """For z = Xw and ℓ = ½‖z − y‖² the Hessian is exactly XᵀX = Jᵀ I J."""
    model = torch.nn.Linear(4, 1, bias=False).to(DT)
    inputs, targets = torch.randn(9, 4, dtype=DT), torch.randn(9, 1, dtype=DT)
    outputs = model(inputs)
    loss = 0.5 * (outputs - targets).square().sum()
    params = list(model.parameters())
    ggn = dense_matrix(GaussNewtonCurvature(outputs, loss, params).gvp, params)
    torch.testing.assert_close(ggn, inputs.T @ inputs, rtol=1e-12, atol=1e-12)
