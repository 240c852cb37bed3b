"""Vector arithmetic on lists of tensors.

The inverse-HVP solvers work in the weight space of a model, whose "vectors" are lists of
tensors shaped like the model's parameters (``[W1 (784, 256), b1 (256,), ...]``). These helpers
treat such a list as one vector in R^d, d = sum of numels, without concatenating it: each is a
thin wrapper over PyTorch's multi-tensor ``torch._foreach_*`` kernels, which apply one operation
to every tensor of a list in a single call (fused kernels on CUDA). ``benchmarks/`` compares
them with a single flat buffer.

Functions return new tensors and leave their inputs untouched, so solvers read like the maths
they implement; the ones whose names end in ``_`` (``add_``, ``scale_``) update their first
argument in place instead, for solver state that would otherwise be reallocated every iteration.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

TensorList = Sequence[torch.Tensor]


def dot(xs: TensorList, ys: TensorList) -> torch.Tensor:
    """Inner product <x, y> = sum_i x_i . y_i, as a 0-d tensor on the vectors' device."""
    if not xs:
        raise ValueError("dot of empty tensor lists")
    if len(xs) == 1 == len(ys):  # one op instead of three (single-tensor models)
        return torch.vdot(xs[0].reshape(-1), ys[0].reshape(-1))
    return torch.stack(
        [torch.vdot(x.reshape(-1), y.reshape(-1)) for x, y in zip(xs, ys, strict=True)]
    ).sum()


def norm(xs: TensorList) -> torch.Tensor:
    """Euclidean norm ||x||_2 of the concatenated vector, as a 0-d tensor."""
    if len(xs) == 1:
        return torch.linalg.vector_norm(xs[0])
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(xs))))


def add(xs: TensorList, ys: TensorList, alpha: float | torch.Tensor = 1.0) -> list[torch.Tensor]:
    """x + alpha * y; ``alpha`` a number, or a 0-d tensor that stays on the device."""
    if isinstance(alpha, torch.Tensor):
        return list(torch._foreach_addcmul(list(xs), list(ys), [alpha] * len(xs)))
    return list(torch._foreach_add(list(xs), list(ys), alpha=alpha))


def scale(xs: TensorList, alpha: float) -> list[torch.Tensor]:
    """alpha * x."""
    return list(torch._foreach_mul(list(xs), alpha))


def add_(xs: TensorList, ys: TensorList, alpha: float | torch.Tensor = 1.0) -> None:
    """x ← x + alpha * y, in place (``ys`` may be ``xs`` itself); ``alpha`` as in :func:`add`."""
    if isinstance(alpha, torch.Tensor):
        torch._foreach_addcmul_(list(xs), list(ys), [alpha] * len(xs))
    else:
        torch._foreach_add_(list(xs), list(ys), alpha=alpha)


def scale_(xs: TensorList, alpha: float) -> None:
    """x ← alpha * x, in place."""
    torch._foreach_mul_(list(xs), alpha)


def zeros_like(xs: TensorList) -> list[torch.Tensor]:
    """The zero vector with the shapes, dtypes and devices of ``xs``."""
    return [torch.zeros_like(x) for x in xs]


def clone(xs: TensorList) -> list[torch.Tensor]:
    """Detached copies of ``xs``."""
    return [x.detach().clone() for x in xs]


def all_finite(xs: TensorList) -> bool:
    """True when no entry of any tensor is NaN or infinite (one host synchronisation)."""
    return not xs or bool(torch.stack([torch.isfinite(x).all() for x in xs]).all())


def flatten(xs: TensorList) -> torch.Tensor:
    """Concatenate into one flat vector of size d = sum of numels."""
    return torch.cat([x.reshape(-1) for x in xs])


def unflatten(flat: torch.Tensor, like: TensorList) -> list[torch.Tensor]:
    """Split a flat vector back into views shaped like ``like``."""
    sizes = [x.numel() for x in like]
    return [chunk.view_as(x) for chunk, x in zip(torch.split(flat, sizes), like, strict=True)]
