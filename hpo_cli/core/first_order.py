"""``solver=first_order``: a hypergradient without any second-order product (SAMA-style).

The IFT hypergradient (sign convention of :mod:`hpo_cli.core.hypergradient`)

    dL_v/dλ = ∂L_v/∂λ − (∂²L_t/∂λ∂w)ᵀ H⁻¹ ∂L_v/∂w

needs H⁻¹ b (Hessian-vector products) and a mixed product (a double backward). SAMA (Choe et
al., "Making Scalable Meta Learning Practical", NeurIPS 2023) drops both:

1. H⁻¹ ≈ P, the inner optimiser's own diagonal preconditioner at its current state. One step
   w ← w − P ∇L_t is a Newton step when P = H⁻¹, so P is what the optimiser already believes
   the inverse curvature to be (the identity solver's H⁻¹ ≈ I, rescaled per weight):

   * SGD: P = η I (η the group's learning rate; momentum and dampening are ignored),
   * Adam, AdamW: P = diag(η / (√v̂ + ε)), v̂ = v / (1 − β₂ᵗ) the bias-corrected second moment,
   * RMSprop: P = diag(η / (√v + ε)),

   each weight with its parameter group's η, β₂, ε. Any other optimiser (or Adam's
   ``amsgrad``, RMSprop's ``centered``) is refused in one line by :meth:`FirstOrder.check`.
   SAMA's own Adam preconditioner is the Jacobian ∂u/∂g of Adam's update u with respect to
   the last gradient g, η((1 − β₁)β₂ v₀ − β₁(1 − β₂) g m₀)/(√v + ε)³ with m₀, v₀ the moments
   before that step; η / (√v̂ + ε) is the update's preconditioner with the moments held fixed
   (the diagonal that multiplies m̂), the simpler choice kept here.
2. The mixed term (∂²L_t/∂λ∂w)ᵀ x at x = P ∂L_v/∂w by central differences of the first-order
   gradient ∂L_t/∂λ along x (:class:`hpo_cli.core.finite_difference.FiniteDifferenceCurvature`:
   step h = ε_m^{1/3}(1 + ‖w‖) along x/‖x‖, error O(h²) + rounding ε_m/h), as SAMA and DARTS do
   (their step is a fixed radius over ‖x‖).

What is approximated: H⁻¹ by P, exact only for a quadratic with H = P⁻¹ and otherwise as good
as the optimiser's curvature model (v̂ estimates the diagonal of the empirical Fisher, not H,
and no diagonal sees off-diagonal curvature); the central difference adds O(h²) plus rounding
to the mixed term (about 1e-10 relative in float64, 1e-5 in float32).

Cost: one validation forward and backward (∂L_v/∂w, ∂L_v/∂λ) and two training forward and
first-order backward passes (L_t at w ± h x/‖x‖): no Hessian-vector product, no double
backward, so it works on models whose layers have none (a ``@once_differentiable`` kernel),
at the price of about one IFT-solver step's work against K products for Neumann or CG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hpo_cli.core.finite_difference import FiniteDifferenceCurvature
from hpo_cli.core.hvp import MatVec
from hpo_cli.core.hypergradient import Hypergradient, hypergradient
from hpo_cli.core.methods import HypergradientMethod, HyperLosses
from hpo_cli.core.solvers.base import SolveInfo, StatelessSolver, Status
from hpo_cli.core.solvers.diagonal import second_moment_diagonal
from hpo_cli.core.vectors import TensorList

PRECONDITIONED = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop)
"""The inner optimisers whose preconditioner P :func:`inner_preconditioner` reads."""


def check_preconditioned(optimizer: torch.optim.Optimizer) -> None:
    """Raise ``ValueError`` (one line) unless :func:`inner_preconditioner` can read
    ``optimizer``'s P: SGD, Adam, AdamW (without ``amsgrad``) or RMSprop (not ``centered``)."""
    name = type(optimizer).__name__
    if not isinstance(optimizer, PRECONDITIONED):
        raise ValueError(
            f"the first-order hypergradient reads the preconditioner of SGD, Adam, AdamW or "
            f"RMSprop, not of {name}"
        )
    for group in optimizer.param_groups:
        for flag in ("amsgrad", "centered"):
            if group.get(flag):
                raise ValueError(f"the first-order hypergradient does not read {name}({flag}=True)")


def inner_preconditioner(
    optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]
) -> list[torch.Tensor] | None:
    """P per weight, shaped like ``params``: η for SGD, η / (√v̂ + ε) for Adam, AdamW and
    RMSprop (:func:`hpo_cli.core.solvers.diagonal.second_moment_diagonal`), with each weight's
    group's η; ``None`` while an adaptive optimiser has no second moments yet (before its first
    step). Raises ``ValueError`` for an optimiser :func:`check_preconditioned` refuses."""
    check_preconditioned(optimizer)
    lr = {id(p): float(group["lr"]) for group in optimizer.param_groups for p in group["params"]}
    if isinstance(optimizer, torch.optim.SGD):
        return [torch.full_like(p, lr[id(p)]).detach() for p in params]
    moments = second_moment_diagonal(optimizer, params)
    if moments is None:
        return None
    return [lr[id(p)] / m for p, m in zip(params, moments, strict=True)]


@dataclass(frozen=True, eq=False)
class Preconditioned(StatelessSolver):
    """x = P ⊙ b for a fixed diagonal P (the inner optimiser's): H⁻¹ ≈ P, no products.

    Args:
        diagonal: P, tensors shaped like b.
        source: the optimiser P was read from, for the message.
    """

    diagonal: TensorList
    source: str = "optimizer"

    def __call__(self, matvec: MatVec, b: TensorList) -> tuple[list[torch.Tensor], SolveInfo]:
        info = SolveInfo(
            solver="first_order",
            status=Status.APPROXIMATION,
            message=f"H⁻¹ approximated by {self.source}'s diagonal preconditioner",
        )
        return [p * v for p, v in zip(self.diagonal, b, strict=True)], info


@dataclass(frozen=True)
class FirstOrder(HypergradientMethod):
    """dL_v/dλ ≈ ∂L_v/∂λ − (∂²L_t/∂λ∂w)ᵀ P ∂L_v/∂w, P the inner optimiser's diagonal
    preconditioner, the mixed term by central differences (module docstring): two training
    gradients, no Hessian-vector product and no double backward. Keeps no state.

    Reads the inner optimiser's state (η, and Adam's or RMSprop's second moments) at every
    hyper-step; :meth:`check` refuses an optimiser it cannot read, and inner weight decay (as for
    every IFT method: :func:`hpo_cli.core.joint.check_inner_weight_decay`).
    """

    name = "first_order"
    inner_batches = 0

    def check(self, optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> None:
        """Raise ``ValueError`` for an inner optimiser whose P cannot be read."""
        check_preconditioned(optimizer)

    def hypergradient(
        self,
        model: nn.Module,
        hparams: Sequence[torch.Tensor],
        optimizer: torch.optim.Optimizer,
        losses: HyperLosses,
        state: None = None,
    ) -> tuple[Hypergradient, None]:
        """The first-order hypergradient at the current weights: ``losses.validation_loss()``
        once, ``losses.training_loss()`` twice (at w ± h x/‖x‖; the weights, buffers and random
        state put back). ``hvps`` is 0 and ``residual`` ``None``; before an adaptive optimiser's
        first step (no second moments) the result has ``failure`` set. No state."""
        params = list(model.parameters())
        diagonal = inner_preconditioner(optimizer, params)
        source = type(optimizer).__name__
        if diagonal is None:
            zeros = tuple(torch.zeros_like(h) for h in hparams)
            message = f"{source} has no second moments yet (no inner step taken)"
            info = SolveInfo(solver="first_order", status=Status.APPROXIMATION, message=message)
            return Hypergradient(zeros, info, None, 0, failure=message), None
        val_loss = losses.validation_loss()
        differences = FiniteDifferenceCurvature(
            losses.training_loss, params, hparams, buffers=list(model.buffers())
        )
        result = hypergradient(
            None,
            val_loss,
            params,
            hparams,
            Preconditioned(diagonal, source),
            check_residual=False,
            raise_on_failure=False,
            products=differences,
        )
        return result, None
