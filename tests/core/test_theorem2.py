"""Lorraine, Vicol & Duvenaud (2020), Theorem 2: K unrolled SGD steps of learning rate α started
at the exact minimiser w* give the IFT hypergradient with the K-term Neumann series

    dL_v(w_K)/dλ = ∂L_v/∂λ − (∂²L_t/∂λ∂w)ᵀ α Σ_{j=0}^{K−1} (I − αH)^j ∂L_v/∂w,

because w_k = w* for every k and dw_{k+1}/dλ = (I − αH) dw_k/dλ − α ∂²L_t/∂w∂λ from dw_0/dλ = 0.
K steps ↔ powers 0..K−1, i.e. :class:`~hpo_cli.core.solvers.Neumann` with ``terms=K``, the same
K on both sides (``terms`` counts the terms summed). Checked to 1e-10 in float64 on ridge
regression (closed-form minimiser) and on a small tanh MLP at a minimiser found by Newton's
method (‖∇L_t‖ < 1e-13).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hpo_cli import Neumann, hypergradient
from hpo_cli.core.hvp import TrainingCurvature, dense_matrix
from hpo_cli.core.unrolled import SGDUpdate, unrolled_hypergradient
from tests.core.test_mlp import SHAPES, THETA, single_thread, solved, train_loss, unpack, val_loss

DT = torch.float64
STEPS = (1, 2, 5, 20)

__all__ = ["single_thread"]  # test_core_mlp's fixture: one thread for the tiny dense Hessians


class Weights(nn.Module):
    """The weights w as a module, so that the unroll can substitute them."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        super().__init__()
        self.w = nn.ParameterList(nn.Parameter(t.clone()) for t in tensors)


def compare(weights: Weights, theta: torch.Tensor, training, validation, alpha: float, steps):
    """(unrolled hypergradient, IFT hypergradient with the K-term Neumann series) for each K."""
    params = list(weights.parameters())
    update = SGDUpdate(alpha)
    pairs = []
    for k in steps:
        unrolled, _ = unrolled_hypergradient(
            weights,
            [theta],
            update,
            update.init_state(params),
            lambda _k: training(list(weights.parameters())),
            lambda: validation(list(weights.parameters())),
            k,
        )
        series = hypergradient(
            training(params), validation(params), params, [theta], Neumann(terms=k, alpha=alpha)
        )
        pairs.append((unrolled[0], series.grads[0]))
    return pairs


def largest_eigenvalue(loss: torch.Tensor, params: list[torch.Tensor]) -> float:
    return float(
        torch.linalg.eigvalsh(dense_matrix(TrainingCurvature(loss, params).hvp, params))[-1]
    )


def test_theorem_2_on_ridge_regression():
    gen = torch.Generator().manual_seed(0)
    x, x_val = (torch.randn(n, 5, generator=gen, dtype=DT) for n in (30, 20))
    teacher = torch.randn(5, generator=gen, dtype=DT)
    y = x @ teacher + 0.3 * torch.randn(30, generator=gen, dtype=DT)
    y_val = x_val @ teacher + 0.3 * torch.randn(20, generator=gen, dtype=DT)
    theta = torch.linspace(-2.0, 0.0, 5, dtype=DT).requires_grad_(True)  # c = exp(θ) per weight

    def training(params):
        return ((x @ params[0] - y) ** 2).mean() / 2 + (theta.exp() * params[0] ** 2).sum()

    def validation(params):
        return ((x_val @ params[0] - y_val) ** 2).mean() / 2

    with torch.no_grad():  # (XᵀX/n + 2 diag c) w* = Xᵀy/n
        minimiser = torch.linalg.solve(x.T @ x / 30 + 2 * torch.diag(theta.exp()), x.T @ y / 30)
    weights = Weights([minimiser])
    params = list(weights.parameters())
    (gradient,) = torch.autograd.grad(training(params), params)
    assert float(gradient.norm()) < 1e-14
    alpha = 1.0 / largest_eigenvalue(training(params), params)
    for unrolled, series in compare(weights, theta, training, validation, alpha, STEPS):
        assert float(series.norm()) > 1e-4
        torch.testing.assert_close(unrolled, series, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("variant", sorted(THETA))
def test_theorem_2_on_an_mlp_at_a_newton_minimiser(variant):
    theta, minimiser = solved(variant)  # memoised with test_core_mlp's own tests
    theta = theta.clone().requires_grad_(True)
    weights = Weights(unpack(minimiser))
    params = list(weights.parameters())
    gradient = torch.autograd.grad(train_loss(params, theta), params)
    assert sum(float(g.norm()) ** 2 for g in gradient) ** 0.5 < 1e-13
    assert [tuple(p.shape) for p in params] == SHAPES

    def training(params):
        return train_loss(params, theta)

    alpha = 0.5 / largest_eigenvalue(training(params), params)
    pairs = compare(weights, theta, training, val_loss, alpha, STEPS)
    for unrolled, series in pairs:
        assert float(series.norm()) > 1e-6
        torch.testing.assert_close(unrolled, series, rtol=1e-10, atol=1e-14)
    # The term count matters: K steps differ from the (K+1)-term series.
    assert not torch.allclose(pairs[0][0], pairs[1][1], rtol=1e-3)
