"""JointOptimizer on ridge regression with one decay per weight (float64): its hyper-step moves
λ along the closed-form hypergradient, its inner step is the inner optimiser's, and its failure
policy stops or skips (counting) an untrustworthy hypergradient without touching λ."""

import pytest
import torch
from torch import nn

from hpo_cli import (
    ConjugateGradient,
    Exact,
    HypergradientError,
    HyperLosses,
    ImplicitDifferentiation,
    JointOptimizer,
    Neumann,
)
from hpo_cli.core import joint as joint_module
from hpo_cli.core.solvers import CGState
from hpo_cli.core.unrolled import Unrolled

DT = torch.float64


def ridge(seed: int = 0, n: int = 60, d: int = 6):
    gen = torch.Generator().manual_seed(seed)
    w_true = torch.randn(d, generator=gen, dtype=DT)
    x, x_val = (torch.randn(n, d, generator=gen, dtype=DT) for _ in range(2))
    y = x @ w_true + 0.3 * torch.randn(n, generator=gen, dtype=DT)
    y_val = x_val @ w_true + 0.3 * torch.randn(n, generator=gen, dtype=DT)
    model = nn.Linear(d, 1, bias=False).to(DT)
    log_decay = torch.full((d,), -2.0, dtype=DT, requires_grad=True)

    def train_loss() -> torch.Tensor:
        penalty = (log_decay.exp() * model.weight.squeeze(0).square()).sum()
        return (model(x).squeeze(-1) - y).square().mean() + penalty

    def val_loss() -> torch.Tensor:
        return (model(x_val).squeeze(-1) - y_val).square().mean()

    return model, log_decay, (x, y, x_val, y_val), train_loss, val_loss


def closed_form_hypergradient(log_decay, data):
    """dL_v/dθ at w*(c), c = exp θ: H = 2XᵀX/n + 2 diag c, b = ∇L_v(w*), dL_v/dc = −2 w* ⊙ H⁻¹b."""
    x, y, x_val, y_val = data
    c = log_decay.detach().exp()
    h = 2 * x.T @ x / len(x) + 2 * torch.diag(c)
    w = torch.linalg.solve(h, 2 * x.T @ y / len(x))
    b = 2 * x_val.T @ (x_val @ w - y_val) / len(x_val)
    return -2 * w * torch.linalg.solve(h, b) * c


def test_inner_steps_reach_the_minimiser_and_the_hyper_step_follows_the_closed_form():
    model, log_decay, data, train_loss, val_loss = ridge()
    lbfgs = torch.optim.LBFGS(
        model.parameters(),
        max_iter=100,
        tolerance_grad=1e-15,
        tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )
    hyper_optimizer = torch.optim.SGD([log_decay], lr=0.1)
    joint = JointOptimizer(model, [log_decay], lbfgs, hyper_optimizer, Exact())
    joint.inner_step(train_loss)  # L-BFGS re-evaluates the closure: the optimiser's own contract
    expected = closed_form_hypergradient(log_decay, data)
    before = log_decay.detach().clone()
    result = joint.hyper_step(HyperLosses(train_loss, val_loss))
    assert result.failure is None
    # L-BFGS stops within ~1e-8 of w*; an inexact inner solve would be off by 1e-5 and more
    torch.testing.assert_close(result.grads[0], expected, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(log_decay.detach(), before - 0.1 * expected, rtol=1e-6, atol=1e-12)


def diverging_joint(on_failure: str):
    """Neumann with α = 1 on a Hessian whose largest eigenvalue is far above 2: the series grows
    by |1 − λmax| per term and is reported diverged."""
    model, log_decay, _, train_loss, val_loss = ridge()
    with torch.no_grad():
        model.weight.fill_(1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    hyper_optimizer = torch.optim.SGD([log_decay], lr=0.1)
    scaled = lambda: 50 * train_loss()  # noqa: E731 (λmax ≈ 100)
    solver = Neumann(terms=21, alpha=1.0)
    joint = JointOptimizer(
        model, [log_decay], optimizer, hyper_optimizer, solver, on_failure=on_failure
    )
    return joint, log_decay, scaled, val_loss


def test_stop_raises_and_leaves_lambda_alone():
    joint, log_decay, train_loss, val_loss = diverging_joint("stop")
    before = log_decay.detach().clone()
    with pytest.raises(HypergradientError, match="diverged"):
        joint.hyper_step(HyperLosses(train_loss, val_loss))
    assert torch.equal(log_decay.detach(), before)


def test_skip_counts_and_leaves_lambda_alone():
    joint, log_decay, train_loss, val_loss = diverging_joint("skip")
    before = log_decay.detach().clone()
    for expected_count in (1, 2):
        result = joint.hyper_step(HyperLosses(train_loss, val_loss))
        assert result.failure is not None and "diverged" in result.failure
        assert joint.skipped_hyper_steps == expected_count
    assert torch.equal(log_decay.detach(), before)
    assert log_decay.grad is None


def test_an_unknown_failure_policy_is_refused():
    model, log_decay, *_ = ridge()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="on_failure=retry"):
        JointOptimizer(model, [log_decay], optimizer, optimizer, Exact(), on_failure="retry")


@pytest.mark.parametrize(
    ("inner", "decay"),
    [
        (lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=1e-3), "0.001"),
        (lambda p: torch.optim.Adam(p, lr=0.1, weight_decay=1e-3), "0.001"),
        (lambda p: torch.optim.RMSprop(p, lr=0.1, weight_decay=1e-3), "0.001"),
        (lambda p: torch.optim.AdamW(p, lr=0.1), "0.01"),  # AdamW's default decay
    ],
)
def test_an_inner_optimiser_that_decays_the_weights_is_refused_by_the_ift(inner, decay):
    """The optimiser's decay is not in L_t, so the IFT would differentiate another problem;
    unrolled differentiation differentiates the optimiser's own updates and keeps it."""
    model, log_decay, *_ = ridge()
    hyper_optimizer = torch.optim.SGD([log_decay], lr=0.1)
    with pytest.raises(ValueError, match=rf"^optimizer.weight_decay={decay} is invalid .*L_t"):
        JointOptimizer(model, [log_decay], inner(model.parameters()), hyper_optimizer, Exact())
    JointOptimizer(model, [log_decay], inner(model.parameters()), hyper_optimizer, Unrolled(3))
    undecayed = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.0)
    JointOptimizer(model, [log_decay], undecayed, hyper_optimizer, Exact())


def test_state_dict_restores_both_optimisers_and_the_skip_count():
    """What a hand-written loop's checkpoint needs beside the model's and λ's tensors."""
    joint, _, train_loss, val_loss = diverging_joint("skip")
    joint.optimizer.param_groups[0]["lr"] = 0.125
    joint.hyper_optimizer.param_groups[0]["lr"] = 0.5
    joint.hyper_step(HyperLosses(train_loss, val_loss))  # skipped and counted
    state = joint.state_dict()
    other, *_ = diverging_joint("skip")
    other.load_state_dict(state)
    assert other.skipped_hyper_steps == 1
    assert other.optimizer.param_groups[0]["lr"] == 0.125
    assert other.hyper_optimizer.param_groups[0]["lr"] == 0.5


def at_the_minimiser(method, hyper_lr: float = 0.0):
    """Ridge at w* (L-BFGS to ~1e-8), with ``method`` as the joint's hypergradient method."""
    model, log_decay, _, train_loss, val_loss = ridge()
    lbfgs = torch.optim.LBFGS(
        model.parameters(),
        max_iter=100,
        tolerance_grad=1e-15,
        tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )
    hyper_optimizer = torch.optim.SGD([log_decay], lr=hyper_lr)
    joint = JointOptimizer(model, [log_decay], lbfgs, hyper_optimizer, method)
    joint.inner_step(train_loss)
    return joint, log_decay, train_loss, val_loss


def test_unrolled_and_implicit_methods_go_through_the_same_hyper_step():
    """Theorem 2 through JointOptimizer.hyper_step: K unrolled SGD steps of step α from w* give
    the IFT hypergradient with the K-term Neumann series of step α (the same K)."""
    alpha, steps = 0.05, 7
    results = []
    for method in (
        Unrolled(steps=steps, inner="sgd", lr=alpha),
        ImplicitDifferentiation(Neumann(terms=steps, alpha=alpha)),
    ):
        joint, log_decay, train_loss, val_loss = at_the_minimiser(method)
        assert joint.method is method and joint.method.inner_batches == (
            steps if isinstance(method, Unrolled) else 0
        )
        losses = HyperLosses(train_loss, val_loss, lambda _k, loss=train_loss: loss())
        result = joint.hyper_step(losses)
        assert result.failure is None
        torch.testing.assert_close(log_decay.grad, result.grads[0], rtol=0, atol=0)
        results.append(result.grads[0])
    # equal up to the inner solve's distance from w* (L-BFGS stops ~1e-8 away)
    torch.testing.assert_close(results[0], results[1], rtol=1e-7, atol=1e-12)
    assert float(results[0].norm()) > 1e-6


def test_a_plain_solver_means_implicit_differentiation_on_the_hessian():
    joint, *_ = at_the_minimiser(Exact())
    assert isinstance(joint.method, ImplicitDifferentiation)
    assert joint.method.curvature == "hessian" and joint.method_state is not None


def test_the_joint_keeps_the_solver_state_and_checkpoints_it():
    """A warm CG's previous solution lives in the joint (method_state), goes into state_dict as
    plain values and, restored, gives the same next hyper-step bit for bit."""
    solver = ConjugateGradient(max_iter=3, tol=0.0, warm_start=True)
    joint, log_decay, train_loss, val_loss = at_the_minimiser(solver, hyper_lr=0.01)
    assert joint.method_state == CGState()
    joint.hyper_step(HyperLosses(train_loss, val_loss))
    assert isinstance(joint.method_state, CGState) and joint.method_state.solution is not None
    saved = joint.state_dict()
    assert set(saved["method"]) == {"solution", "calls"}
    other, other_decay, other_train, other_val = at_the_minimiser(solver, hyper_lr=0.01)
    with torch.no_grad():
        other_decay.copy_(log_decay)
    other.model.load_state_dict(joint.model.state_dict())  # the model's own tensors
    other.load_state_dict(saved)
    expected = joint.hyper_step(HyperLosses(train_loss, val_loss))
    got = other.hyper_step(HyperLosses(other_train, other_val))
    assert got.solve.extras["warm_start"] == expected.solve.extras["warm_start"] == 1.0
    assert torch.equal(got.grads[0], expected.grads[0])


def test_the_older_two_tensor_call_still_works_and_warns_once(monkeypatch):
    monkeypatch.setattr(joint_module, "_LEGACY_WARNED", [])
    joint, _, train_loss, val_loss = at_the_minimiser(Exact())
    new = joint.hyper_step(HyperLosses(train_loss, val_loss))
    with pytest.warns(DeprecationWarning, match="HyperLosses"):
        old = joint.hyper_step(train_loss(), val_loss())
    torch.testing.assert_close(old.grads[0], new.grads[0], rtol=0, atol=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        joint.hyper_step(train_loss(), val_loss())  # once only


@pytest.mark.parametrize("held", [False, True], ids=["lambda_requires_grad", "lambda_held"])
def test_an_inner_step_moves_w_by_its_gradient_and_leaves_lambda_grad_alone(held):
    """L_t = ‖w − a‖² + Σ e^θ w², one SGD step of size η: w ← w − η(2(w − a) + 2e^θ w), whether
    λ requires grad (λ's graph built, ``backward`` restricted to w) or not (held constant)."""
    model = nn.Linear(3, 1, bias=False).to(DT)
    target = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
    theta = torch.tensor([-1.0, 0.0, 1.0], dtype=DT, requires_grad=True)
    lr = 0.1
    joint = JointOptimizer(
        model,
        [theta],
        torch.optim.SGD(model.parameters(), lr=lr),
        torch.optim.SGD([theta], lr=lr),
        Neumann(terms=2, alpha=0.1),
    )
    w = model.weight.detach().squeeze(0).clone()
    expected = w - lr * (2 * (w - target) + 2 * theta.detach().exp() * w)
    theta.requires_grad_(not held)
    joint.inner_step(
        lambda: (
            (model.weight.squeeze(0) - target).square().sum()
            + (theta.exp() * model.weight.squeeze(0).square()).sum()
        )
    )
    torch.testing.assert_close(model.weight.detach().squeeze(0), expected, rtol=1e-14, atol=0)
    assert theta.grad is None


class RecordingSGD(torch.optim.SGD):
    """SGD that records the closure each ``step`` receives."""

    def __init__(self, params, lr: float) -> None:
        super().__init__(params, lr=lr)
        self.closures: list[object] = []

    def step(self, closure=None):
        self.closures.append(closure)
        return super().step(closure)


@pytest.mark.parametrize(
    "optimizer, closure_expected",
    [
        (lambda p: RecordingSGD(p, lr=0.1), False),
        (lambda p: torch.optim.LBFGS(p, lr=1.0, max_iter=1), True),
    ],
    ids=["sgd_without_closure", "lbfgs_with_closure"],
)
def test_only_optimisers_that_reevaluate_the_loss_get_a_closure(optimizer, closure_expected):
    """A bare loop's ``backward(); step()`` for SGD (its step is w ← w − η∇L_t, the gradient
    taken once), ``step(closure)`` for L-BFGS, which re-evaluates the loss itself: both end where
    the same optimiser driven by hand ends, L_t = ‖w − a‖²."""
    target = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
    models = [nn.Linear(3, 1, bias=False).to(DT) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    theta = torch.zeros(1, dtype=DT, requires_grad=True)
    inner = optimizer(models[0].parameters())
    joint = JointOptimizer(models[0], [theta], inner, torch.optim.SGD([theta], lr=0.1), Neumann())
    by_hand = optimizer(models[1].parameters())

    def loss_of(model: nn.Linear) -> torch.Tensor:
        return (model.weight.squeeze(0) - target).square().sum()

    def closure() -> torch.Tensor:
        by_hand.zero_grad()
        loss = loss_of(models[1])
        loss.backward()
        return loss

    assert joint_module.reevaluates_loss(inner) == closure_expected
    for _ in range(2):
        loss = joint.inner_step(lambda: loss_of(models[0]))
        by_hand.step(closure)
        assert not loss.requires_grad
    torch.testing.assert_close(models[0].weight, models[1].weight, rtol=1e-14, atol=0)
    if isinstance(inner, RecordingSGD):
        assert inner.closures == [None, None]
