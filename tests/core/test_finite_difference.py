"""Products by central differences of first-order gradients (``products="finite_difference"``)
against autograd's double backward and the dense solve of :mod:`tests.core.test_mlp`, and on a
layer autograd cannot differentiate twice (``@once_differentiable``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hpo_cli import Exact, hypergradient
from hpo_cli.core.finite_difference import FiniteDifferenceCurvature
from hpo_cli.core.hvp import NoSecondDerivative, TrainingCurvature
from hpo_cli.core.methods import HyperLosses, ImplicitDifferentiation
from hpo_cli.core.vectors import flatten
from hpo_cli.hyper import WeightDecay
from tests.core import test_mlp
from tests.support.no_double_backward import OnceTanh

DT = torch.float64


def relative_error(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    reference = flatten(expected)
    return float(torch.linalg.vector_norm(flatten(actual) - reference) / reference.norm())


def mlp_at_optimum(dtype: torch.dtype):
    """test_mlp's 3→6→3 tanh network at w*(θ) (one λ per layer): weights, θ, and L_t of them."""
    theta, weights = test_mlp.solved("per_layer")
    params = [p.to(dtype).requires_grad_(True) for p in test_mlp.unpack(weights)]
    theta = theta.to(dtype).requires_grad_(True)
    x = test_mlp.X_TRAIN.to(dtype)

    def training_loss():
        lam = test_mlp.strengths(theta)
        layers = zip(params, test_mlp.LAYER_OF, strict=True)
        penalty = sum(lam[layer] * (p**2).sum() for p, layer in layers)
        return F.cross_entropy(test_mlp.logits(params, x), test_mlp.Y_TRAIN) + penalty

    return params, theta, training_loss


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-9), (torch.float32, 5e-4)])
def test_products_match_double_backward(dtype, tolerance):
    """Relative error ≈ ε_m^{2/3} (module docstring): measured 4e-11 in float64, 3e-5 in
    float32; the tolerances leave a factor of about 20."""
    params, theta, training_loss = mlp_at_optimum(dtype)
    autograd = TrainingCurvature(training_loss(), params, [theta])
    differences = FiniteDifferenceCurvature(training_loss, params, [theta])
    vector = [torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) for p in params]
    vector = [v.to(dtype) for v in vector]
    assert relative_error(differences.hvp(vector), autograd.hvp(vector)) < tolerance
    assert relative_error(differences.mixed_vjp(vector), autograd.mixed_vjp(vector)) < tolerance
    zero = [torch.zeros_like(p) for p in params]
    assert all(float(p.abs().max()) == 0.0 for p in differences.hvp(zero))


def test_hypergradient_matches_the_dense_solve():
    """The IFT hypergradient with finite-difference products and the exact solve, against the
    dense Hessian of L_t in (w, θ) and a direct solve (test_mlp's reference), float64."""
    params, theta, training_loss = mlp_at_optimum(DT)
    weights = flatten([p.detach() for p in params])
    reference = test_mlp.dense_reference(weights, theta.detach())
    result = hypergradient(
        None,
        test_mlp.val_loss(params),
        params,
        [theta],
        Exact(),
        products=FiniteDifferenceCurvature(training_loss, params, [theta]),
    )
    test_mlp.assert_close(result.grads[0], reference, rtol=1e-8)
    assert result.residual < 1e-8


class Activation(nn.Module):
    def __init__(self, function) -> None:
        super().__init__()
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)


def problem(activation):
    """A 4 → 6 → 3 network with dropout (randomness) after ``activation``, per-weight decay,
    float64; L_v in eval mode (no dropout)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 6), Activation(activation), nn.Dropout(0.3), nn.Linear(6, 3)
    ).to(DT)
    hyper = WeightDecay(model, "weight", init=0.01, data=None).to(DT)
    gen = torch.Generator().manual_seed(1)
    x, x_val = torch.randn(16, 4, generator=gen), torch.randn(8, 4, generator=gen)
    y, y_val = torch.randint(0, 3, (16,), generator=gen), torch.randint(0, 3, (8,), generator=gen)

    def validation_loss() -> torch.Tensor:
        model.eval()
        loss = F.cross_entropy(model(x_val.to(DT)), y_val)
        model.train()
        return loss

    losses = HyperLosses(
        training_loss=lambda: F.cross_entropy(model(x.to(DT)), y) + hyper.penalty(model),
        validation_loss=validation_loss,
    )
    return model, list(hyper.parameters()), losses


def test_a_layer_without_double_backward_is_named_and_finite_differences_differentiate_it():
    """Autograd reads the once-differentiable gradient as constant (its H v would silently drop
    the layer), so it is refused; the finite-difference hypergradient agrees with autograd's on
    the same network built from torch.tanh at the same dropout mask (float64, exact solve), and
    leaves the weights and the random state as they were."""
    model, hparams, losses = problem(OnceTanh.apply)
    params = list(model.parameters())
    with pytest.raises(NoSecondDerivative, match="@once_differentiable"):
        TrainingCurvature(losses.training_loss(), params, hparams)
    twin, twin_hparams, twin_losses = problem(torch.tanh)
    with torch.random.fork_rng():  # the twin's L_t draws the mask the products will replay
        reference, _ = ImplicitDifferentiation(Exact()).hypergradient(
            twin, twin_hparams, None, twin_losses, None
        )
    weights, rng = [p.clone() for p in params], torch.get_rng_state()
    method = ImplicitDifferentiation(Exact(), products="finite_difference")
    result, _ = method.hypergradient(model, hparams, None, losses, None)
    assert relative_error(list(result.grads), list(reference.grads)) < 1e-7
    assert all(torch.equal(p, w) for p, w in zip(params, weights, strict=True))
    assert torch.equal(torch.get_rng_state(), rng)


def test_weights_and_buffers_are_put_back_bit_for_bit():
    """The products evaluate L_t many times at w ± h u: the weights end bit for bit as they began
    (w + h u − h u would not, in float32), and so do BatchNorm's running statistics."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 2))
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    params = list(model.parameters())
    state = [t.clone() for t in [*params, *model.buffers()]]
    differences = FiniteDifferenceCurvature(
        lambda: F.cross_entropy(model(x), y), params, (), list(model.buffers())
    )
    for seed in range(3):
        differences.hvp([torch.randn(p.shape, generator=torch.manual_seed(seed)) for p in params])
    after = [*params, *model.buffers()]
    assert all(torch.equal(a, b) for a, b in zip(after, state, strict=True))


def test_unknown_products_and_finite_differences_of_the_gauss_newton_matrix_are_refused():
    with pytest.raises(ValueError, match=r"products='forward' is unknown"):
        ImplicitDifferentiation(Exact(), products="forward")
    with pytest.raises(ValueError, match=r"with curvature='ggn' use products='autograd'"):
        ImplicitDifferentiation(Exact(), curvature="ggn", products="finite_difference")


class Attention(nn.Module):
    """One self-attention layer over 4 tokens of 6 features, then a linear read-out."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.out = nn.Linear(6, 18), nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x.view(-1, 4, 6)).unsqueeze(1).chunk(3, dim=-1)
        return self.out(F.scaled_dot_product_attention(q, k, v).flatten(1))


def test_flash_attention_without_double_backward_is_named_and_differenced():
    """PyTorch's CPU flash attention has no double backward (a real kernel, not a test double):
    autograd's error becomes NoSecondDerivative; finite differences through it agree with
    autograd through the math kernel, float64."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    model = Attention().to(DT)
    x, y = torch.randn(5, 24, dtype=DT), torch.randint(0, 3, (5,))
    params = list(model.parameters())
    vector = [torch.randn_like(p) for p in params]
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        flash = TrainingCurvature(F.cross_entropy(model(x), y), params)
        with pytest.raises(NoSecondDerivative, match="not implemented"):
            flash.hvp(vector)
        differences = FiniteDifferenceCurvature(lambda: F.cross_entropy(model(x), y), params)
        product = differences.hvp(vector)
    with sdpa_kernel(SDPBackend.MATH):
        reference = TrainingCurvature(F.cross_entropy(model(x), y), params).hvp(vector)
    assert relative_error(product, reference) < 1e-8
