"""The curvature of a hypergradient: which symmetric matrix A stands in for H in A⁻¹ ∂L_v/∂w.

``curvature="hessian"`` (the default) is the IFT's own H = ∂²L_t/∂w². ``curvature="ggn"`` is

    A = Jᵀ (∂²L_t/∂z²) J + ∂²R/∂w²,

the generalised Gauss-Newton matrix of the data loss (J = ∂z/∂w of the network outputs z) plus the
exact Hessian of the penalty R(w, λ) (a hyperparameter module's :meth:`penalty`). The data term
drops Σ_i (∂L_t/∂z_i) ∂²z_i/∂w², the part of H that makes it indefinite on a non-convex network,
so A is positive semi-definite whenever the loss is convex in z and R in w (cross-entropy, squared
error, an L2 penalty): CG and Neumann then converge where they would fail on H. The mixed term
∂²L_t/∂λ∂w stays exact; only the matrix inverted changes (Martens, 2010; Schraudolph, 2002).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from hpo_cli.core.hvp import GaussNewtonCurvature, MatVec, TrainingCurvature
from hpo_cli.core.vectors import TensorList, add_

CURVATURES = ("hessian", "ggn")
"""The matrices a hypergradient's solver may invert."""


def check_curvature(curvature: str) -> None:
    if curvature not in CURVATURES:
        raise ValueError(f"curvature={curvature!r} is unknown; choose one of {CURVATURES}")


class GaussNewtonPlusPenalty:
    """v ↦ (Jᵀ H_z J + ∂²R/∂w²) v: the ``ggn`` curvature as a matvec for any solver.

    Args:
        train_loss: scalar L_t with its graph (data loss and penalty).
        outputs: the network outputs z the data loss is computed from, with their graph.
        penalty: R(w, λ) with its graph, or a number (no penalty: no second term).
        params: the weights w.

    Attributes:
        matvecs: products evaluated.
    """

    def __init__(
        self,
        train_loss: torch.Tensor,
        outputs: torch.Tensor,
        penalty: torch.Tensor | float,
        params: Sequence[torch.Tensor],
    ) -> None:
        self.gauss_newton = GaussNewtonCurvature(outputs, train_loss, params)
        self.penalty = None
        if isinstance(penalty, torch.Tensor) and penalty.requires_grad:
            self.penalty = TrainingCurvature(penalty, params)
        self.matvecs = 0

    def __call__(self, vector: TensorList) -> list[torch.Tensor]:
        self.matvecs += 1
        product = self.gauss_newton.gvp(vector)
        if self.penalty is not None:
            add_(product, self.penalty.hvp(vector))
        return product


def curvature_matvec(
    curvature: str,
    train_loss: torch.Tensor,
    params: Sequence[torch.Tensor],
    outputs: torch.Tensor | None,
    penalty: torch.Tensor | float,
) -> MatVec | None:
    """The matvec of ``curvature`` for :func:`hpo_cli.core.hypergradient.hypergradient`'s
    ``curvature`` argument: ``None`` for the Hessian (its default), else the GGN plus penalty.

    Raises:
        ValueError: an unknown curvature, or ``ggn`` without the outputs.
    """
    check_curvature(curvature)
    if curvature == "hessian":
        return None
    if outputs is None:
        raise ValueError("curvature=ggn needs the network outputs the training loss came from")
    return GaussNewtonPlusPenalty(train_loss, outputs, penalty, params)


def loss_and_outputs(
    model: nn.Module, compute_loss: Callable[[], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(compute_loss(), the outputs of ``model``'s forward call inside it), for a Hessian-free
    closure whose loss function calls the model without returning its outputs. The outputs are
    captured by a forward hook, removed afterwards; the model must be called exactly once."""
    captured: list[torch.Tensor] = []
    handle = model.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    try:
        loss = compute_loss()
    finally:
        handle.remove()
    if len(captured) != 1:
        raise ValueError(f"the loss called the model {len(captured)} times; expected exactly once")
    return loss, captured[0]
