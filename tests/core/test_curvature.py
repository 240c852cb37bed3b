"""Hessian-vector and mixed products against dense second derivatives (float64).

The model has weights of several shapes (a matrix, vectors, a 0-d scalar), one weight that enters
the loss linearly (constant gradient, no graph) and one whose gradient depends on λ only; the
reference is ``torch.autograd.functional.hessian`` of the same loss as a function of one flat
vector [w; λ].
"""

import pytest
import torch

from hpo_cli import TrainingCurvature, dense_matrix

DT = torch.float64
WEIGHT_SHAPES = [(4, 3), (4,), (2, 4), (), (2,), (3,)]
HPARAM_SHAPES = [(2,), ()]


def sizes(shapes):
    return [torch.Size(s).numel() for s in shapes]


D = sum(sizes(WEIGHT_SHAPES))
P = sum(sizes(HPARAM_SHAPES))


def split(flat, shapes):
    return [c.reshape(s) for c, s in zip(flat.split(sizes(shapes)), shapes, strict=True)]


def make_inputs():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(7, 3, generator=gen, dtype=DT)
    target = torch.randn(7, 2, generator=gen, dtype=DT)
    weights = 0.7 * torch.randn(D, generator=gen, dtype=DT)
    hparams = torch.tensor([-1.0, 0.3, 0.8], dtype=DT)
    return x, target, weights, hparams


X, TARGET, W0, LAM0 = make_inputs()


def loss(weights, hparams):
    """A tiny tanh MLP with a learnt output temperature, a weight-decay per layer, a weight `a`
    entering linearly (∂L/∂a constant) and a weight `s` whose gradient is λ-only (∂L/∂s = τ·1)."""
    w1, b1, w2, scale, a, s = weights
    decay, temperature = hparams
    hidden = torch.tanh(X @ w1.T + b1)
    out = scale * (hidden @ w2.T) * torch.exp(temperature)
    fit = ((out - TARGET) ** 2).mean()
    penalty = torch.exp(decay[0]) * (w1**2).sum() + torch.exp(decay[1]) * (w2**2).sum()
    return fit + penalty + 0.3 * a.sum() + temperature * s.sum() + scale**4


def leaves():
    weights = [t.clone().requires_grad_(True) for t in split(W0, WEIGHT_SHAPES)]
    hparams = [t.clone().requires_grad_(True) for t in split(LAM0, HPARAM_SHAPES)]
    return weights, hparams


def dense_joint_hessian():
    def flat_loss(z):
        return loss(split(z[:D], WEIGHT_SHAPES), split(z[D:], HPARAM_SHAPES))

    return torch.autograd.functional.hessian(flat_loss, torch.cat([W0, LAM0]))


FULL = dense_joint_hessian()
HESSIAN = FULL[:D, :D]
MIXED = FULL[:D, D:]  # ∂²L/∂w∂λ, d×p


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def random_vector(seed):
    gen = torch.Generator().manual_seed(seed)
    return split(torch.randn(D, generator=gen, dtype=DT), WEIGHT_SHAPES)


def curvature():
    weights, hparams = leaves()
    return TrainingCurvature(loss(weights, hparams), weights, hparams)


def test_reference_has_linear_and_hparam_only_blocks():
    """Sanity check of the model: the rows of `a` and `s` in H are zero, `s` couples to τ."""
    a_rows = slice(D - 5, D - 3)
    s_rows = slice(D - 3, D)
    assert float(HESSIAN[a_rows].abs().max()) == 0.0
    assert float(HESSIAN[s_rows].abs().max()) == 0.0
    assert float(MIXED[s_rows, -1].abs().min()) == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hvp_matches_dense_hessian(seed):
    v = random_vector(seed)
    product = curvature().hvp(v)
    assert [p.shape for p in product] == [t.shape for t in v]
    torch.testing.assert_close(flat(product), HESSIAN @ flat(v), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_mixed_vjp_matches_dense_mixed_jacobian(seed):
    x = random_vector(seed)
    product = curvature().mixed_vjp(x)
    assert [p.shape for p in product] == [torch.Size(s) for s in HPARAM_SHAPES]
    torch.testing.assert_close(flat(product), MIXED.T @ flat(x), rtol=1e-12, atol=1e-12)


def test_dense_matrix_of_hvp_is_the_dense_hessian():
    curv = curvature()
    torch.testing.assert_close(dense_matrix(curv.hvp, curv.params), HESSIAN, rtol=1e-12, atol=1e-12)


def test_dense_matrix_of_an_explicit_linear_map():
    gen = torch.Generator().manual_seed(5)
    matrix = torch.randn(7, 7, generator=gen, dtype=DT)
    like = [torch.zeros(2, 2, dtype=DT), torch.zeros(3, dtype=DT)]

    def matvec(v):
        return split(matrix @ flat(v), [(2, 2), (3,)])

    assert torch.equal(dense_matrix(matvec, like), matrix)


def test_products_can_be_repeated_on_one_graph():
    curv = curvature()
    v = random_vector(0)
    first = flat(curv.hvp(v))
    curv.mixed_vjp(v)
    assert torch.equal(flat(curv.hvp(v)), first)


def test_hvp_count_counts_hvps_only():
    curv = curvature()
    assert curv.hvp_count == 0
    for seed in range(3):
        curv.hvp(random_vector(seed))
    curv.mixed_vjp(random_vector(0))
    assert curv.hvp_count == 3


def test_dense_matrix_costs_d_hvps():
    curv = curvature()
    dense_matrix(curv.hvp, curv.params)
    assert curv.hvp_count == D


def test_products_are_detached():
    curv = curvature()
    v = random_vector(0)
    assert not any(p.requires_grad for p in curv.hvp(v) + curv.mixed_vjp(v))


def test_hvp_of_a_loss_linear_in_every_weight_is_zero():
    w = torch.ones(3, dtype=DT, requires_grad=True)
    lam = torch.tensor(2.0, dtype=DT, requires_grad=True)
    curv = TrainingCurvature((lam * w).sum(), [w], [lam])
    v = [torch.tensor([1.0, 2.0, 3.0], dtype=DT)]
    assert torch.equal(curv.hvp(v)[0], torch.zeros(3, dtype=DT))
    assert float(curv.mixed_vjp(v)[0]) == 6.0


def test_mixed_vjp_of_an_hparam_absent_from_the_loss_is_zero():
    w = torch.ones(3, dtype=DT, requires_grad=True)
    unused = torch.tensor(2.0, dtype=DT, requires_grad=True)
    curv = TrainingCurvature((w**3).sum(), [w], [unused])
    assert float(curv.mixed_vjp([torch.ones(3, dtype=DT)])[0]) == 0.0


def test_non_scalar_training_loss_is_rejected():
    w = torch.ones(3, dtype=DT, requires_grad=True)
    with pytest.raises(ValueError, match="scalar"):
        TrainingCurvature(w**2, [w])
