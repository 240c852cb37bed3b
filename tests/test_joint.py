"""JointOptimizer, the public object for users' own loops: its hyper-step against the ridge
closed form, the failure policy, closure optimisers and its state for checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hpo_cli import Exact, HypergradientError, JointOptimizer, SolveInfo, Status


def ridge(seed: int = 0, n: int = 30, m: int = 20, d: int = 4):
    g = torch.Generator().manual_seed(seed)
    x, xv = (
        torch.randn(n, d, generator=g, dtype=torch.float64),
        torch.randn(m, d, generator=g, dtype=torch.float64),
    )
    w_true = torch.randn(d, generator=g, dtype=torch.float64)
    y = x @ w_true + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    yv = xv @ w_true + 0.5 * torch.randn(m, generator=g, dtype=torch.float64)
    return x, y, xv, yv


def joint_for(x, y, xv, yv, solver, on_failure="stop", hyper_lr=0.1):
    model = nn.Linear(x.shape[1], 1, bias=False).double()
    log_decay = nn.Parameter(torch.tensor(-1.0, dtype=torch.float64))
    joint = JointOptimizer(
        model,
        [log_decay],
        optimizer=torch.optim.LBFGS(model.parameters(), lr=1, line_search_fn="strong_wolfe"),
        hyper_optimizer=torch.optim.SGD([log_decay], lr=hyper_lr),
        solver=solver,
        on_failure=on_failure,
    )

    def train_loss():  # L_t = ½ mean (xw − y)² + ½ e^θ ‖w‖²
        residual = model(x).squeeze(-1) - y
        return 0.5 * residual.square().mean() + 0.5 * log_decay.exp() * model.weight.square().sum()

    def val_loss():
        return 0.5 * (model(xv).squeeze(-1) - yv).square().mean()

    return joint, model, log_decay, train_loss, val_loss


def test_a_hyper_step_follows_the_ridge_closed_form():
    x, y, xv, yv = ridge()
    joint, model, log_decay, train_loss, val_loss = joint_for(x, y, xv, yv, Exact())
    for _ in range(5):  # L-BFGS through inner_step's closure: to the minimiser w*(λ)
        joint.inner_step(train_loss)
    lam, n = float(log_decay.detach().exp()), len(y)
    a = x.T @ x / n + lam * torch.eye(x.shape[1], dtype=torch.float64)
    w_star = torch.linalg.solve(a, x.T @ y / n)
    assert torch.allclose(model.weight.detach()[0], w_star, atol=1e-8)
    dw_dlam = -torch.linalg.solve(a, w_star)  # ∂w*/∂λ
    dlv_dw = xv.T @ (xv @ w_star - yv) / len(yv)
    expected = float(dlv_dw @ dw_dlam) * lam  # d/dθ with λ = e^θ
    theta = float(log_decay.detach())
    result = joint.hyper_step(train_loss(), val_loss())
    assert result.grads[0].item() == pytest.approx(expected, rel=1e-6)
    assert float(log_decay.detach()) == pytest.approx(
        theta - 0.1 * result.grads[0].item(), rel=1e-12
    )


class Diverging:
    def __call__(self, matvec, b):
        return [torch.full_like(v, float("nan")) for v in b], SolveInfo("toy", Status.DIVERGED)


def test_the_failure_policy_stops_or_skips_and_counts():
    data = ridge()
    joint, _, log_decay, train_loss, val_loss = joint_for(*data, Diverging())
    with pytest.raises(HypergradientError):
        joint.hyper_step(train_loss(), val_loss())
    joint, _, log_decay, train_loss, val_loss = joint_for(*data, Diverging(), on_failure="skip")
    before = float(log_decay.detach())
    result = joint.hyper_step(train_loss(), val_loss())
    assert result.failure is not None and joint.skipped_hyper_steps == 1
    assert float(log_decay.detach()) == before
    with pytest.raises(ValueError, match="on_failure=ignore is invalid"):
        joint_for(*data, Exact(), on_failure="ignore")


def test_state_dict_restores_both_optimisers_and_the_skip_count():
    data = ridge()
    joint, _, _, train_loss, val_loss = joint_for(*data, Diverging(), on_failure="skip")
    joint.inner_step(train_loss)
    joint.hyper_step(train_loss(), val_loss())  # skipped
    state = joint.state_dict()
    other, *_ = joint_for(*data, Exact())
    other.load_state_dict(state)
    assert other.skipped_hyper_steps == 1
    restored = other.optimizer.state_dict()["state"][0]
    assert restored["n_iter"] == state["optimizer"]["state"][0]["n_iter"] > 0
    assert other.hyper_optimizer.state_dict() == state["hyper_optimizer"]
