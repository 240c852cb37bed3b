"""Hypergradient methods: one interface for implicit and unrolled differentiation.

A :class:`HypergradientMethod` turns what a hyper-step can evaluate (:class:`HyperLosses`,
closures over the loop's mini-batches) and the inner optimiser into dL_v/dλ, with the sign
convention of :mod:`hpo_cli.core.hypergradient`. It holds settings only; what one hyper-step
hands to the next (a solver's warm start) is a state passed in and returned, as for the
solvers (:mod:`hpo_cli.core.solvers.base`)::

    state = method.init_state()
    result, state = method.hypergradient(model, hparams, optimizer, losses, state)

Three implementations:

* :class:`ImplicitDifferentiation` — the IFT: an inverse-HVP solver and the curvature it
  inverts (``"hessian"``: H = ∂²L_t/∂w²; ``"ggn"``: the Gauss-Newton matrix plus the penalty's
  Hessian, :mod:`hpo_cli.core.curvature`), its products made by double backward or by finite
  differences of gradients (:data:`hpo_cli.core.hvp.PRODUCTS`); damping is the solver's own
  (μ of A + μI).
* :class:`hpo_cli.core.unrolled.Unrolled` — differentiating K steps of the inner optimiser.
* :class:`hpo_cli.core.first_order.FirstOrder` — the IFT with H⁻¹ read as the inner optimiser's
  diagonal preconditioner and the mixed term by central differences (SAMA): no products.

Each declares ``inner_batches``, the training mini-batches it evaluates
(``losses.inner_training_loss(k)`` for k < inner_batches): 0 for the IFT, K for unrolling, so a
loop draws exactly those. :func:`hypergradient_method` makes a method of a solver.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hpo_cli.core.curvature import CURVATURES, curvature_matvec, loss_and_outputs
from hpo_cli.core.finite_difference import FiniteDifferenceCurvature
from hpo_cli.core.hvp import PRODUCTS, MatVec
from hpo_cli.core.hypergradient import Hypergradient, hypergradient
from hpo_cli.core.solvers.base import InverseHVPSolver, SolverState
from hpo_cli.core.solvers.diagonal import second_moment_diagonal


@dataclass(frozen=True)
class HyperLosses:
    """What a hyper-step may evaluate, as closures the method calls as it needs (each call runs
    the model at the current weights; the mini-batches are fixed when the closures are made).

    Attributes:
        training_loss: () ↦ scalar L_t(w, λ) on the hyper-step's training batch (the batch of
            the IFT's H and mixed term), with its graph.
        validation_loss: () ↦ scalar L_v(w, λ) on the validation batch, with its graph.
        inner_training_loss: k ↦ L_t on inner training mini-batch k (the same batch for the
            same k), for k < the method's ``inner_batches``; ``None`` when it needs none.
        penalty: () ↦ the penalty R(w, λ) inside L_t (for ``curvature="ggn"``, whose matrix
            adds R's Hessian); ``None``: no penalty.
    """

    training_loss: Callable[[], torch.Tensor]
    validation_loss: Callable[[], torch.Tensor]
    inner_training_loss: Callable[[int], torch.Tensor] | None = None
    penalty: Callable[[], torch.Tensor | float] | None = None


class HypergradientMethod(ABC):
    """dL_v/dλ from the losses of a hyper-step (see the module docstring)."""

    inner_batches: int = 0
    """Inner training mini-batches :meth:`hypergradient` evaluates (``inner_training_loss``)."""

    name: str = "implicit"
    """How messages name the method (``solver=<name>``)."""

    def init_state(self) -> SolverState | None:
        """The state before the first hyper-step (``None``: the method keeps none)."""
        return None

    def load_state(self, state: dict[str, Any] | None) -> SolverState | None:
        """The state of a checkpoint's :meth:`state_dict` (``None``/empty: the initial one)."""
        return None

    def state_dict(self, state: SolverState | None) -> dict[str, Any]:
        """A checkpoint's plain values (tensors, numbers) of ``state``."""
        return {} if state is None else state.as_dict()

    def check(self, optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> None:
        """Raise ``ValueError`` before training when the method cannot work with ``optimizer``
        (nothing to check by default)."""
        return

    @abstractmethod
    def hypergradient(
        self,
        model: nn.Module,
        hparams: Sequence[torch.Tensor],
        optimizer: torch.optim.Optimizer,
        losses: HyperLosses,
        state: SolverState | None,
    ) -> tuple[Hypergradient, SolverState | None]:
        """dL_v/dλ (one tensor per λ, shaped like it) with diagnostics, and the next state.

        Leaves the weights and ``optimizer``'s state unchanged and writes no ``.grad``; a result
        that cannot be trusted has ``failure`` set (it does not raise).
        """


class ImplicitDifferentiation(HypergradientMethod):
    """The IFT hypergradient ∂L_v/∂λ − (∂²L_t/∂λ∂w)ᵀ A⁻¹ ∂L_v/∂w, A ≈ H solved by ``solver``.

    Args:
        solver: approximates A⁻¹ b (:mod:`hpo_cli.core.solvers`); its state is this method's.
        curvature: A: ``"hessian"`` (H = ∂²L_t/∂w²) or ``"ggn"`` (Jᵀ H_z J + ∂²R/∂w², which
            needs the model's outputs: ``losses.training_loss`` must call the model once).
        check_residual: spend one more product to report ‖Ax − b‖/‖b‖.
        products: how products with H and the mixed term are made: ``"autograd"`` (double
            backward) or ``"finite_difference"`` (central differences of first-order gradients,
            for models without double backward; ``curvature="hessian"`` only).
    """

    inner_batches = 0

    def __init__(
        self,
        solver: InverseHVPSolver,
        curvature: str = "hessian",
        check_residual: bool = True,
        products: str = "autograd",
    ) -> None:
        if curvature not in CURVATURES:
            raise ValueError(f"curvature={curvature!r} is unknown; choose one of {CURVATURES}")
        if products not in PRODUCTS:
            raise ValueError(f"products={products!r} is unknown; choose one of {PRODUCTS}")
        if products == "finite_difference" and curvature != "hessian":
            raise ValueError(
                f"products='finite_difference' makes Hessian products only; with "
                f"curvature={curvature!r} use products='autograd'"
            )
        self.solver = solver
        self.curvature = curvature
        self.check_residual = check_residual
        self.products = products

    def __repr__(self) -> str:
        return (
            f"ImplicitDifferentiation({self.solver!r}, curvature={self.curvature!r}, "
            f"products={self.products!r})"
        )

    def init_state(self) -> SolverState:
        return self.solver.init_state()

    def load_state(self, state: dict[str, Any] | None) -> SolverState:
        return type(self.solver.init_state()).from_dict(state)

    def curvature_of(
        self, model: nn.Module, losses: HyperLosses
    ) -> tuple[torch.Tensor, MatVec | None]:
        """L_t (with its graph) and the matvec v ↦ A v of the matrix this method inverts: ``None``
        for the Hessian (``hypergradient`` builds H's products from L_t itself), else the GGN
        plus the penalty's Hessian, from the outputs of the model call inside L_t."""
        if self.curvature == "hessian":
            return losses.training_loss(), None
        train_loss, outputs = loss_and_outputs(model, losses.training_loss)
        penalty = losses.penalty() if losses.penalty is not None else 0.0
        params = list(model.parameters())
        return train_loss, curvature_matvec(self.curvature, train_loss, params, outputs, penalty)

    def hypergradient(
        self,
        model: nn.Module,
        hparams: Sequence[torch.Tensor],
        optimizer: torch.optim.Optimizer,
        losses: HyperLosses,
        state: SolverState | None,
    ) -> tuple[Hypergradient, SolverState | None]:
        """L_t, then (``ggn``) R, then L_v are evaluated once each (with finite-difference
        products, L_v first, then L_t twice per product); the second moments are read from
        ``optimizer`` only for a solver that ``reads_second_moments``."""
        params = list(model.parameters())
        differences = None
        if self.products == "finite_difference":
            differences = FiniteDifferenceCurvature(
                losses.training_loss, params, hparams, buffers=list(model.buffers())
            )
            train_loss, matvec = None, None
        else:
            train_loss, matvec = self.curvature_of(model, losses)
        val_loss = losses.validation_loss()
        moments = None
        if self.solver.reads_second_moments:
            moments = second_moment_diagonal(optimizer, params)
        result = hypergradient(
            train_loss,
            val_loss,
            params,
            hparams,
            self.solver,
            check_residual=self.check_residual,
            raise_on_failure=False,
            curvature=matvec,
            solver_state=self.init_state() if state is None else state,
            second_moments=moments,
            products=differences,
        )
        return result, result.solver_state


def hypergradient_method(
    solver: InverseHVPSolver | HypergradientMethod, **options: Any
) -> HypergradientMethod:
    """``solver`` itself when it is a method already (``Unrolled``), else the implicit method
    of that inverse-HVP solver with ``options`` (:class:`ImplicitDifferentiation`'s
    ``curvature``, ``products``; its defaults where left out)."""
    if isinstance(solver, HypergradientMethod):
        return solver
    return ImplicitDifferentiation(solver, **options)
