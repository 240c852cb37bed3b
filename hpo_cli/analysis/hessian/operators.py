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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hpo_cli.core.hvp import GaussNewtonCurvature, MatVec, TrainingCurvature
from hpo_cli.core.vectors import TensorList, add, flatten, unflatten


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
    curvature = TrainingCurvature(loss, params)
    return SymmetricOperator(curvature.hvp, [p.detach() for p in params])


def ggn_operator(
    outputs: torch.Tensor,
    output_loss: torch.Tensor,
    params: Sequence[torch.Tensor],
    penalty: torch.Tensor | float = 0.0,
) -> SymmetricOperator:
    """G = Jᵀ H_z J + ∇²R for the loss ℓ(z) = ``output_loss`` of ``outputs`` z(w) plus a penalty
    R(w) = ``penalty`` whose exact Hessian is added (nothing when it is a plain number)."""
    gauss_newton = GaussNewtonCurvature(outputs, output_loss, params)
    if not isinstance(penalty, torch.Tensor) or not penalty.requires_grad:
        return SymmetricOperator(gauss_newton.gvp, [p.detach() for p in params])
    penalty_curvature = TrainingCurvature(penalty, params)

    def matvec(vector: TensorList) -> list[torch.Tensor]:
        return add(gauss_newton.gvp(vector), penalty_curvature.hvp(vector))

    return SymmetricOperator(matvec, [p.detach() for p in params])
