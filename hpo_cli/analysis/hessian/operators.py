"""Symmetric linear maps v ↦ A v in weight space, for curvature analysis.

A :class:`SymmetricOperator` pairs a product ``matvec`` on tensor lists (the currency of
:mod:`hpo_cli.core.hvp` and the solvers) with the parameter shapes ``like``, so that the same
operator serves dense analysis (:func:`hpo_cli.core.hvp.dense_matrix`) and matrix-free methods
on flat vectors in R^d (d = total number of weights, flattened row-major in parameter order).

Two curvatures of a training loss L(w) = ℓ(z(w)) + R(w) with network outputs z:

* the Hessian H = ∂²L/∂w², by reverse-over-reverse products (indefinite in general);
* the generalised Gauss-Newton G = Jᵀ H_z J + ∇²R, with J = ∂z/∂w and H_z = ∂²ℓ/∂z²: the
  Hessian without the term Σ_i (∂ℓ/∂z_i) ∇²z_i, positive semi-definite whenever ℓ is convex in
  z and R is convex (an L2 penalty), whatever the weights.

Both products come from :func:`hpo_cli.core.curvature.curvature_product`, the one the runner's
solvers invert (``solver.curvature``); this module only wraps them as operators.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hpo_cli.core.curvature import curvature_product
from hpo_cli.core.hvp import MatVec
from hpo_cli.core.vectors import flatten, unflatten


@dataclass(frozen=True)
class SymmetricOperator:
    """A symmetric d×d matrix A known only through products.

    Attributes:
        matvec: v ↦ A v on tensor lists shaped like ``like``.
        like: tensors with the shapes, dtype and device of the vectors (values unused).
    """

    matvec: MatVec
    like: list[torch.Tensor]

    @property
    def size(self) -> int:
        """d, the total number of entries of a vector."""
        return sum(x.numel() for x in self.like)

    @property
    def dtype(self) -> torch.dtype:
        return self.like[0].dtype

    @property
    def device(self) -> torch.device:
        return self.like[0].device

    def flat_matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """A v for a flat v of shape (d,), on the operator's device and dtype; returns (d,)."""
        return flatten(self.matvec(unflatten(vector, self.like)))


def matrix_operator(matrix: torch.Tensor) -> SymmetricOperator:
    """The operator of an explicit symmetric matrix (d, d): one flat vector of shape (d,)."""
    return SymmetricOperator(lambda v: [matrix @ v[0]], [matrix[0]])


def hessian_operator(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> SymmetricOperator:
    """H = ∂²loss/∂w² for w = ``params``, reusing one gradient graph for every product."""
    return SymmetricOperator(
        curvature_product("hessian", loss, params), [p.detach() for p in params]
    )


def ggn_operator(
    outputs: torch.Tensor,
    loss: torch.Tensor,
    params: Sequence[torch.Tensor],
    penalty: torch.Tensor | float = 0.0,
) -> SymmetricOperator:
    """G = Jᵀ H_z J + ∇²R: the Gauss-Newton matrix of ``loss`` through its ``outputs`` z(w), plus
    the exact Hessian of the penalty R(w) = ``penalty`` (nothing when it is a plain number).

    ``loss`` is the training loss L_t the outputs came from (the penalty, which does not depend on
    z, may be in it or not: H_z = ∂²L_t/∂z² is the same). For hpo-run's G, take the three from
    :func:`hpo_cli.hyper.training_terms`.
    """
    product = curvature_product("ggn", loss, params, outputs, penalty)
    return SymmetricOperator(product, [p.detach() for p in params])
