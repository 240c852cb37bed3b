"""The first-order (SAMA-style) hypergradient ``solver=first_order``: H⁻¹ ≈ the inner optimiser's
preconditioner P, the mixed term by central differences; against closed forms in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hpo_cli.analysis.solver_comparison import budget_sweep, compare_hypergradients
from hpo_cli.core.first_order import FirstOrder, inner_preconditioner
from hpo_cli.core.hypergradient import hypergradient
from hpo_cli.core.joint import JointOptimizer
from hpo_cli.core.methods import HyperLosses
from hpo_cli.core.solvers import Identity
from hpo_cli.core.vectors import flatten
from tests.support.no_double_backward import OnceTanh

D = 6


class Quadratic(nn.Module):
    """w ∈ R^d with L_t = ½ wᵀAw + ½ Σ exp(λ_i) w_i², L_v = ½‖w − t‖² + 0.1‖λ‖², so that

    ∂L_v/∂w = w − t,  (∂²L_t/∂λ∂w)ᵀ x = exp(λ) ⊙ w ⊙ x,  ∂L_v/∂λ = 0.2 λ,
    and with H⁻¹ ≈ P = diag(p):  g = 0.2 λ − exp(λ) ⊙ w ⊙ p ⊙ (w − t).
    """

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(D, generator=generator, dtype=torch.float64))
        root = torch.randn(D, D, generator=generator, dtype=torch.float64)
        self.register_buffer("a", root @ root.T / D + torch.eye(D, dtype=torch.float64))
        self.register_buffer("t", torch.randn(D, generator=generator, dtype=torch.float64))


def quadratic_problem() -> tuple[Quadratic, torch.Tensor, HyperLosses]:
    model = Quadratic()
    lam = torch.linspace(-0.5, 0.5, D, dtype=torch.float64, requires_grad=True)
    losses = HyperLosses(
        training_loss=lambda: (
            0.5 * model.w @ model.a @ model.w + 0.5 * (lam.exp() * model.w**2).sum()
        ),
        validation_loss=lambda: 0.5 * ((model.w - model.t) ** 2).sum() + 0.1 * (lam**2).sum(),
    )
    return model, lam, losses


def closed_form(model: Quadratic, lam: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    w = model.w.detach()
    return 0.2 * lam.detach() - lam.detach().exp() * w * p * (w - model.t)


def train(model: nn.Module, optimizer: torch.optim.Optimizer, loss, steps: int) -> list:
    grads = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss().backward(inputs=list(model.parameters()))
        grads.append([p.grad.clone() for p in model.parameters()])
        optimizer.step()
    return grads


def test_sgd_preconditioner_gives_the_closed_form_and_eta_times_the_identity_solvers_mixed_term():
    model, lam, losses = quadratic_problem()
    eta = 0.05
    optimizer = torch.optim.SGD(model.parameters(), lr=eta, momentum=0.9)
    train(model, optimizer, losses.training_loss, 3)
    result, state = FirstOrder().hypergradient(model, [lam], optimizer, losses, None)
    assert state is None and result.failure is None and result.hvps == 0
    expected = closed_form(model, lam, torch.full((D,), eta, dtype=torch.float64))
    torch.testing.assert_close(result.grads[0], expected, rtol=1e-7, atol=0)
    # the same as the IFT with H⁻¹ ≈ η·I and the mixed term by double backward
    exact_mixed = hypergradient(
        losses.training_loss(), losses.validation_loss(), [model.w], [lam], Identity(scale=eta)
    )
    torch.testing.assert_close(result.grads[0], exact_mixed.grads[0], rtol=1e-7, atol=0)


def test_adams_preconditioner_is_read_from_its_state_per_group_with_bias_correction():
    """P = η / (√(v/(1 − β₂ᵗ)) + ε) by hand from the gradients the steps saw, each group its own
    η, β₂ and ε."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    first, second = list(model[0].parameters()), list(model[2].parameters())
    settings = [dict(lr=0.01, betas=(0.9, 0.99), eps=1e-3), dict(lr=0.2, betas=(0.5, 0.9), eps=0.1)]
    groups = [dict(params=first, **settings[0]), dict(params=second, **settings[1])]
    optimizer = torch.optim.Adam(groups)
    x = torch.randn(5, 3, dtype=torch.float64)
    assert inner_preconditioner(optimizer, list(model.parameters())) is None  # no step yet
    steps = 3
    grads = train(model, optimizer, lambda: (model(x) ** 2).sum(), steps)
    preconditioner = inner_preconditioner(optimizer, list(model.parameters()))
    for index, p in enumerate(preconditioner):
        group = settings[0] if index < len(first) else settings[1]
        beta2 = group["betas"][1]
        v = sum((1 - beta2) * beta2 ** (steps - 1 - k) * g[index] ** 2 for k, g in enumerate(grads))
        hand = group["lr"] / ((v / (1 - beta2**steps)).sqrt() + group["eps"])
        torch.testing.assert_close(p, hand, rtol=1e-12, atol=0)


def test_adam_gives_the_closed_form_with_its_preconditioner():
    model, lam, losses = quadratic_problem()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, eps=1e-2)
    train(model, optimizer, losses.training_loss, 4)
    (p,) = inner_preconditioner(optimizer, [model.w])
    result, _ = FirstOrder().hypergradient(model, [lam], optimizer, losses, None)
    torch.testing.assert_close(result.grads[0], closed_form(model, lam, p), rtol=1e-7, atol=0)
    assert float(p.max() / p.min()) > 1.5  # a diagonal, not a multiple of the identity


class TanhNet(nn.Module):
    """x → tanh(first x) → last, with OnceTanh (no double backward) or torch.tanh."""

    def __init__(self, once: bool) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.first, self.last = nn.Linear(4, 5).double(), nn.Linear(5, 3).double()
        self.once = once

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.first(x)
        return self.last(OnceTanh.apply(hidden) if self.once else torch.tanh(hidden))


def tanh_problem(once: bool) -> tuple[TanhNet, torch.Tensor, HyperLosses]:
    model = TanhNet(once)
    generator = torch.Generator().manual_seed(2)
    x, xv = (torch.randn(8, 4, generator=generator, dtype=torch.float64) for _ in range(2))
    y, yv = (torch.randint(0, 3, (8,), generator=generator) for _ in range(2))
    decay = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)  # weight decay e^λ

    def training_loss() -> torch.Tensor:
        penalty = sum((p**2).sum() for p in model.parameters())
        return nn.functional.cross_entropy(model(x), y) + 0.5 * decay.exp() * penalty

    losses = HyperLosses(
        training_loss=training_loss,
        validation_loss=lambda: nn.functional.cross_entropy(model(xv), yv),
    )
    return model, decay, losses


def test_a_model_without_double_backward_gets_the_double_backward_value():
    """On OnceTanh (no double backward) the first-order hypergradient is the one the IFT gives
    with x = P ∂L_v/∂w and the mixed term by double backward on torch.tanh, to the central
    differences' error."""
    results = []
    for once in (True, False):
        model, decay, losses = tanh_problem(once)
        optimizer = torch.optim.RMSprop(model.parameters(), lr=0.01)
        train(model, optimizer, losses.training_loss, 5)
        if once:
            result, _ = FirstOrder().hypergradient(model, [decay], optimizer, losses, None)
            assert result.failure is None
            results.append(result.grads[0])
            with pytest.raises(RuntimeError, match="once_differentiable"):
                hypergradient(
                    losses.training_loss(),
                    losses.validation_loss(),
                    list(model.parameters()),
                    [decay],
                    Identity(),
                )
            continue
        params = list(model.parameters())
        p = inner_preconditioner(optimizer, params)
        val_grad = torch.autograd.grad(losses.validation_loss(), params)
        x = [pi * gi for pi, gi in zip(p, val_grad, strict=True)]
        (dt_dlam,) = torch.autograd.grad(losses.training_loss(), [decay], create_graph=True)
        mixed = torch.autograd.grad(dt_dlam, params)
        by_hand = -sum((m * xi).sum() for m, xi in zip(mixed, x, strict=True))
        results.append(by_hand)
    assert float(results[1].abs()) > 1e-4
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("optimizer", "needle"),
    [
        (lambda ps: torch.optim.Adagrad(ps), "not of Adagrad"),
        (lambda ps: torch.optim.Adam(ps, amsgrad=True), "Adam(amsgrad=True)"),
        (lambda ps: torch.optim.RMSprop(ps, centered=True), "RMSprop(centered=True)"),
    ],
)
def test_an_optimizer_whose_preconditioner_it_cannot_read_is_refused_in_one_line(optimizer, needle):
    model, lam, losses = quadratic_problem()
    inner = optimizer(model.parameters())
    with pytest.raises(ValueError, match="first-order") as error:
        FirstOrder().check(inner, [model.w])
    assert needle in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ValueError, match="first-order"):
        FirstOrder().hypergradient(model, [lam], inner, losses, None)


def test_before_adams_first_step_the_hyper_step_fails_and_inner_decay_is_refused():
    model, lam, losses = quadratic_problem()
    optimizer = torch.optim.Adam(model.parameters())
    result, _ = FirstOrder().hypergradient(model, [lam], optimizer, losses, None)
    assert "no second moments" in result.failure
    assert float(flatten(result.grads).abs().max()) == 0
    hyper_optimizer = torch.optim.SGD([lam], lr=0.1)
    decaying = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.01)
    with pytest.raises(ValueError, match=r"weight_decay=0\.01 is invalid"):
        JointOptimizer(model, [lam], decaying, hyper_optimizer, FirstOrder())


def test_the_solver_comparison_scores_the_first_order_candidate_against_the_dense_solve():
    """cos(g, g*) and ‖g − g*‖/‖g*‖ of the first_order row, against the closed forms: g with
    P = η I, g* with the dense H = A + diag(e^λ)."""
    model, lam, losses = quadratic_problem()
    eta = 0.05
    optimizer = torch.optim.SGD(model.parameters(), lr=eta)
    train(model, optimizer, losses.training_loss, 3)
    rows = compare_hypergradients(
        lambda: (losses.training_loss(), losses.validation_loss()),
        [model.w],
        [lam],
        budget_sweep(["first_order"], 3, None),
        first_order=lambda: FirstOrder().hypergradient(model, [lam], optimizer, losses, None)[0],
    )
    assert [(row.solver, row.k, row.hvps) for row in rows] == [
        ("exact", D, D),
        ("first_order", 0, 0),
    ]
    w, t = model.w.detach(), model.t
    hessian = model.a + torch.diag(lam.detach().exp())
    exact = 0.2 * lam.detach() - lam.detach().exp() * w * torch.linalg.solve(hessian, w - t)
    first_order = closed_form(model, lam, torch.full((D,), eta, dtype=torch.float64))
    cosine = torch.nn.functional.cosine_similarity(first_order, exact, dim=0)
    assert rows[1].cosine == pytest.approx(float(cosine), rel=1e-7)
    error = (first_order - exact).norm() / exact.norm()
    assert rows[1].rel_error == pytest.approx(float(error), rel=1e-7)
