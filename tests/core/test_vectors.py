"""List-of-tensor vector helpers against arithmetic on one flat float64 vector."""

import pytest
import torch

from hpo_cli.core.vectors import (
    add,
    add_,
    all_finite,
    clone,
    dot,
    flatten,
    norm,
    scale,
    scale_,
    unflatten,
    zeros_like,
)

DT = torch.float64
SHAPES = [(3, 4), (5,), (), (2, 1, 3)]


def random_list(seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=DT) for s in SHAPES]


def cat(tensors):
    """Independent flattening for the reference (not hpo_cli.core.vectors.flatten)."""
    return torch.cat([t.reshape(-1) for t in tensors])


X, Y = random_list(0), random_list(1)
X_FLAT, Y_FLAT = cat(X), cat(Y)


def test_dot_is_flat_inner_product():
    assert float(dot(X, Y)) == pytest.approx(float(X_FLAT @ Y_FLAT), rel=1e-14)


def test_dot_returns_a_0d_tensor():
    assert dot(X, Y).dim() == 0


def test_dot_of_empty_lists_raises():
    with pytest.raises(ValueError):
        dot([], [])


def test_dot_of_mismatched_lists_raises():
    with pytest.raises(ValueError):
        dot(X, Y[:-1])


def test_norm_is_flat_euclidean_norm():
    assert float(norm(X)) == pytest.approx(float(torch.sqrt((X_FLAT**2).sum())), rel=1e-14)


@pytest.mark.parametrize("alpha", [1.0, -0.5, 2.5])
def test_add_with_float_alpha(alpha):
    torch.testing.assert_close(cat(add(X, Y, alpha=alpha)), X_FLAT + alpha * Y_FLAT)


def test_add_with_tensor_alpha():
    alpha = torch.tensor(-1.75, dtype=DT)
    torch.testing.assert_close(cat(add(X, Y, alpha=alpha)), X_FLAT - 1.75 * Y_FLAT)


def test_add_default_alpha_is_one():
    torch.testing.assert_close(cat(add(X, Y)), X_FLAT + Y_FLAT)


@pytest.mark.parametrize("alpha", [0.0, 3.0, torch.tensor(-0.25, dtype=DT)])
def test_scale(alpha):
    torch.testing.assert_close(cat(scale(X, alpha)), float(alpha) * X_FLAT)


def test_results_keep_shapes():
    for result in (add(X, Y), scale(X, 2.0), zeros_like(X), clone(X)):
        assert [t.shape for t in result] == [t.shape for t in X]


def test_inputs_are_left_untouched():
    x, y = clone(X), clone(Y)
    add(x, y, alpha=3.0)
    add(x, y, alpha=torch.tensor(3.0, dtype=DT))
    scale(x, 4.0)
    assert torch.equal(cat(x), X_FLAT)
    assert torch.equal(cat(y), Y_FLAT)


def test_zeros_like():
    zeros = zeros_like(X)
    assert torch.equal(cat(zeros), torch.zeros_like(X_FLAT))
    assert all(z.dtype == DT for z in zeros)


def test_clone_is_detached_and_independent():
    source = [t.clone().requires_grad_(True) for t in X]
    copies = clone(source)
    assert not any(c.requires_grad for c in copies)
    copies[0].add_(1.0)
    assert torch.equal(source[0].detach(), X[0])


@pytest.mark.parametrize("alpha", [1.0, -0.25])
def test_add_in_place_updates_the_first_list_only(alpha):
    xs, ys = clone(X), clone(Y)
    storages = [x.data_ptr() for x in xs]
    add_(xs, ys, alpha=alpha)
    torch.testing.assert_close(cat(xs), X_FLAT + alpha * Y_FLAT, rtol=1e-15, atol=0)
    assert [x.data_ptr() for x in xs] == storages
    torch.testing.assert_close(cat(ys), Y_FLAT, rtol=0, atol=0)


def test_add_in_place_to_itself_doubles():
    xs = clone(X)
    add_(xs, xs)
    torch.testing.assert_close(cat(xs), 2 * X_FLAT, rtol=0, atol=0)


def test_scale_in_place():
    xs = clone(X)
    scale_(xs, -3.0)
    torch.testing.assert_close(cat(xs), -3.0 * X_FLAT, rtol=0, atol=0)


def test_all_finite():
    assert all_finite(X)
    assert all_finite([])
    for bad in (float("nan"), float("inf"), -float("inf")):
        broken = clone(X)
        broken[3][1, 0, 2] = bad
        assert not all_finite(broken)


def test_flatten_is_row_major_concatenation():
    torch.testing.assert_close(flatten(X), X_FLAT, rtol=0, atol=0)


def test_unflatten_inverts_flatten():
    restored = unflatten(X_FLAT, X)
    assert [t.shape for t in restored] == [t.shape for t in X]
    for r, x in zip(restored, X, strict=True):
        assert torch.equal(r, x)


def test_unflatten_returns_views_of_the_flat_vector():
    flat = X_FLAT.clone()
    restored = unflatten(flat, X)
    flat[0] = 123.0
    assert float(restored[0][0, 0]) == 123.0


def test_unflatten_with_non_contiguous_template():
    template = [torch.zeros(4, 3, dtype=DT).T, torch.zeros(2, dtype=DT)]
    flat = torch.arange(14, dtype=DT)
    restored = unflatten(flat, template)
    assert torch.equal(restored[0], torch.arange(12, dtype=DT).reshape(3, 4))
    assert torch.equal(restored[1], torch.tensor([12.0, 13.0], dtype=DT))
