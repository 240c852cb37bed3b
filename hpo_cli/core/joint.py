"""Joint optimisation of weights w and hyperparameters λ, around any training loop.

The object behind ``hpo-run``'s loop and the few lines a hand-written PyTorch loop needs::

    joint = JointOptimizer(model, list(hyper.parameters()), optimizer, hyper_optimizer,
                           solver=Neumann(terms=10, alpha="auto"))
    for outer in range(outer_steps):
        for inner in range(inner_steps):
            joint.inner_step(lambda: train_loss_fn(model, next(train_batches)))  # w ← w − η ∇_w L_t
        result = joint.hyper_step(HyperLosses(lambda: train_loss_fn(model, batch),
                                              lambda: val_loss_fn(model, val_batch)))

``hpo-run``'s loop (:mod:`hpo_cli.runner.loop.train`) is exactly this, so a hand-written loop
and the runner share one code path; ``examples/own_loop.py`` is a complete script. In PyTorch
Lightning, the same calls go in ``training_step`` with ``automatic_optimization = False`` (the
optimisers are the module's own; ``JointOptimizer`` only needs them passed in).

One outer step is ``inner_steps`` calls of :meth:`JointOptimizer.inner_step` (the inner
optimiser on L_t(w, λ)) and one :meth:`JointOptimizer.hyper_step`: dL_v/dλ by the
:class:`hpo_cli.core.methods.HypergradientMethod` (the IFT with an inverse-HVP solver, or
unrolled differentiation), then one step of the outer optimiser on λ. The method holds settings
only; its state between hyper-steps (a solver's warm start) is kept here, in ``method_state``
and :meth:`JointOptimizer.state_dict`. A hypergradient that cannot be trusted (a diverged
solver, non-finite values) is either an error (``on_failure="stop"``) or a skipped hyper-step
that is counted (``on_failure="skip"``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

import torch
from torch import nn

from hpo_cli.core import distributed
from hpo_cli.core.compiled import CompiledOptimizerStep
from hpo_cli.core.curvature import loss_and_outputs
from hpo_cli.core.distributed import all_reduce_mean_
from hpo_cli.core.first_order import FirstOrder
from hpo_cli.core.hypergradient import Hypergradient, HypergradientError
from hpo_cli.core.methods import (
    HypergradientMethod,
    HyperLosses,
    ImplicitDifferentiation,
    hypergradient_method,
)
from hpo_cli.core.solvers import InverseHVPSolver

ON_FAILURE = ("stop", "skip")


def check_scalable(optimizer: torch.optim.Optimizer) -> None:
    """Refuse an inner optimiser that re-evaluates the loss inside ``step`` (L-BFGS,
    Hessian-free) for a gradient scaler, which scales a loss computed before the step.

    Raises:
        ValueError: naming the optimiser.
    """
    if reevaluates_loss(optimizer):
        raise ValueError(
            f"{type(optimizer).__name__} re-evaluates the loss inside its step, which a "
            "gradient scaler cannot scale (float16 needs one): use another optimizer"
        )


def reevaluates_loss(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step`` needs a closure that re-evaluates the loss (L-BFGS's line
    search, Hessian-free's own products); every other optimiser steps on the gradients already
    in ``.grad``."""
    return isinstance(optimizer, torch.optim.LBFGS | GraphClosureOptimizer)


def check_compilable(optimizer: torch.optim.Optimizer) -> None:
    """Refuse an inner optimiser that evaluates the loss inside ``step`` (L-BFGS, Hessian-free)
    for a compiled step (:class:`hpo_cli.core.compiled.CompiledOptimizerStep`): its closure, a
    backward pass inside the step, cannot be compiled with it.

    Raises:
        ValueError: naming the optimiser.
    """
    if reevaluates_loss(optimizer):
        raise ValueError(
            f"{type(optimizer).__name__} evaluates the loss inside its step (a closure), which "
            "cannot be compiled: use another optimizer"
        )


def check_on_failure(on_failure: str) -> None:
    """Raise ``ValueError`` unless ``on_failure`` is one of :data:`ON_FAILURE` (the one check of
    the policy: :class:`JointOptimizer` and hpo-run's early validation both call it)."""
    if on_failure not in ON_FAILURE:
        raise ValueError(f"on_failure={on_failure} is invalid: must be one of {ON_FAILURE}")


def check_inner_weight_decay(method: HypergradientMethod, weight_decay: float) -> None:
    """Raise ``ValueError`` if the inner optimiser decays the weights (``weight_decay`` ≠ 0)
    while ``method`` is implicit differentiation (exact or first-order).

    The IFT differentiates the stationarity condition ∇_w L_t = 0 of the L_t it is given; decay
    the optimiser applies itself is not in L_t, so the weights training reaches solve another
    problem (coupled decay, g ← g + wd·w, adds (wd/2)‖w‖² to it; decoupled AdamW decay is the
    gradient of no loss at all). The L2 term belongs in L_t: a
    :class:`hpo_cli.hyper.WeightDecay` module (``hyper=weight_decay``). Unrolled
    differentiation differentiates the optimiser's own updates, decay included, and may keep it.
    (The one check: :class:`JointOptimizer` and hpo-run's early validation both call it.)
    """
    if weight_decay and isinstance(method, ImplicitDifferentiation | FirstOrder):
        raise ValueError(
            f"optimizer.weight_decay={weight_decay} is invalid with implicit differentiation: "
            "the inner optimiser's decay is not in L_t, so the IFT would differentiate another "
            "problem; put the L2 term in L_t (hyper=weight_decay) or use solver=unrolled"
        )


class GraphClosureOptimizer(torch.optim.Optimizer):
    """An inner optimiser that differentiates the loss itself (Hessian-free): its closure
    returns (loss with its graph, the model's outputs the loss came from) and never calls
    ``backward``; :meth:`JointOptimizer.inner_step` builds such a closure for it.

    Attributes:
        last_step: the last step's diagnostics, a dataclass (hpo-run logs it as
            ``inner_optimizer_state``), or ``None`` before the first step.
    """

    last_step: Any = None


_LEGACY_WARNED: list[bool] = []  # hyper_step(train_loss, val_loss) has warned in this process


class JointOptimizer:
    """Inner steps on w and hyper-steps on λ, with a failure policy.

    Args:
        model: the network whose parameters are the weights w.
        hparams: the hyperparameters λ (leaf tensors the outer optimiser owns).
        optimizer: the inner optimiser over ``model.parameters()`` (any ``torch.optim``
            optimiser; a :class:`GraphClosureOptimizer`, such as Hessian-free, gets a closure
            returning (loss with graph, model outputs)).
        hyper_optimizer: the outer optimiser over ``hparams``.
        solver: the :class:`~hpo_cli.core.methods.HypergradientMethod`
            (:class:`~hpo_cli.core.methods.ImplicitDifferentiation`,
            :class:`~hpo_cli.core.unrolled.Unrolled`), or an inverse-HVP solver, which means
            ``ImplicitDifferentiation(solver)`` on the Hessian.
        on_failure: ``"stop"`` raises :class:`HypergradientError` on an untrustworthy
            hypergradient; ``"skip"`` leaves λ unchanged and counts it in
            :attr:`skipped_hyper_steps`.
        grad_scaler: a gradient scaler for float16 inner steps (``None``: none).
        compile: the inner optimiser's ``step()`` through ``torch.compile``
            (:class:`hpo_cli.core.compiled.CompiledOptimizerStep`, compiled on the first inner
            step and again for an optimiser put in :attr:`optimizer` later); the training loss
            is the caller's to compile (:func:`hpo_cli.core.compiled.compiled`, as ``hpo-run``
            does with ``compile=true``). Hyper-steps stay eager.

    Raises:
        ValueError: an unknown ``on_failure``; ``compile`` with an optimiser that needs a
            closure (:func:`check_compilable`) or with a gradient scaler; or an inner optimiser
            whose param groups decay the weights (non-zero ``weight_decay``, e.g.
            ``torch.optim.AdamW``'s default 0.01) with implicit differentiation, which would
            differentiate a training loss without that decay (:func:`check_inner_weight_decay`;
            put the L2 term in L_t instead).

    Attributes:
        params: the weights w, ``model``'s parameters listed once.
        method: the hypergradient method.
        method_state: its state between hyper-steps (a solver's warm start; ``None``: none).
    """

    def __init__(
        self,
        model: nn.Module,
        hparams: Sequence[torch.Tensor],
        optimizer: torch.optim.Optimizer,
        hyper_optimizer: torch.optim.Optimizer,
        solver: HypergradientMethod | InverseHVPSolver,
        *,
        on_failure: str = "stop",
        grad_scaler: torch.amp.GradScaler | None = None,
        compile: bool = False,
    ) -> None:
        check_on_failure(on_failure)
        if grad_scaler is not None:
            check_scalable(optimizer)
        if compile:
            check_compilable(optimizer)
            if grad_scaler is not None:
                raise ValueError("a gradient scaler (float16) cannot be compiled with the step")
        self.model = model
        self.params = list(model.parameters())
        self.hparams = list(hparams)
        self.optimizer = optimizer
        self.hyper_optimizer = hyper_optimizer
        self.method = hypergradient_method(solver)
        for group in optimizer.param_groups:
            check_inner_weight_decay(self.method, group.get("weight_decay", 0.0))
        self.method_state = self.method.init_state()
        self.on_failure = on_failure
        self.skipped_hyper_steps = 0
        self.grad_scaler = grad_scaler
        self.compile = compile
        self._compiled_step: CompiledOptimizerStep | None = None

    def inner_step(self, training_loss: Callable[[], torch.Tensor]) -> torch.Tensor:
        """One step of the inner optimiser on ``training_loss()`` = L_t(w, λ) of a mini-batch.

        Optimisers that re-evaluate the loss (L-BFGS, Hessian-free: :func:`reevaluates_loss`)
        get ``optimizer.step(closure)``; the others take ``optimizer.step()`` after one
        ``backward``, as a bare PyTorch loop does. Gradients go to w only: while λ requires
        grad, ``backward`` is restricted to w (``inputs=``), leaving λ.grad alone; while it does
        not (λ held constant, :meth:`hpo_cli.hyper.HyperModule.held_constant`), a plain
        ``backward`` does the same work without the restriction's bookkeeping. Returns the loss,
        detached. Data parallel (:mod:`hpo_cli.core.distributed`): the gradients and the loss
        are averaged over the ranks after ``backward``, as DDP does, so every rank takes the
        same step. With ``compile``, that ``step()`` is the compiled one (:meth:`compiled_step`).
        """
        inputs = self.params if any(hparam.requires_grad for hparam in self.hparams) else None
        if self.grad_scaler is not None:
            return self._scaled_inner_step(training_loss, inputs)
        if not reevaluates_loss(self.optimizer):
            loss = self._gradients(training_loss, inputs)
            if self.compile:
                self.compiled_step()
            else:
                self.optimizer.step()
            return loss.detach()
        if self.compile:
            check_compilable(self.optimizer)
        if isinstance(self.optimizer, GraphClosureOptimizer):  # differentiates the loss itself
            if distributed.active():
                raise ValueError(f"{type(self.optimizer).__name__} is not data parallel")
            return self.optimizer.step(lambda: loss_and_outputs(self.model, training_loss)).detach()
        return self.optimizer.step(lambda: self._gradients(training_loss, inputs)).detach()

    def _gradients(
        self, training_loss: Callable[[], torch.Tensor], inputs: list[torch.Tensor] | None
    ) -> torch.Tensor:
        """∇_w L_t into w's ``.grad`` (zeroed first; averaged over the ranks when data
        parallel); returns L_t (with its graph in one process, the ranks' mean otherwise)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = training_loss()
        loss.backward(inputs=inputs)
        if not distributed.active():
            return loss
        mean_loss = loss.detach().clone()  # averaged with the gradients, in one collective
        all_reduce_mean_([*(p.grad for p in self.params if p.grad is not None), mean_loss])
        return mean_loss

    def compiled_step(self) -> None:
        """The compiled ``step()`` of :attr:`optimizer`, compiled anew for a new optimiser."""
        if self._compiled_step is None or self._compiled_step.optimizer is not self.optimizer:
            check_compilable(self.optimizer)
            self._compiled_step = CompiledOptimizerStep(self.optimizer)
        self._compiled_step()

    def _scaled_inner_step(
        self, training_loss: Callable[[], torch.Tensor], inputs: list[torch.Tensor] | None
    ) -> torch.Tensor:
        """The inner step with a gradient scaler (float16): the gradients of s·L_t, divided by
        s before the step, which is skipped, with s halved, when one of them is not finite
        (``torch.amp.GradScaler``'s rule; s doubles after its ``growth_interval`` finite steps).
        Not data parallel: each process would decide on its own gradients whether to skip."""
        if distributed.active():
            raise ValueError("a gradient scaler (precision=16-mixed) is not data parallel")
        self.optimizer.zero_grad(set_to_none=True)
        loss = training_loss()
        self.grad_scaler.scale(loss).backward(inputs=inputs)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        return loss.detach()

    def inner_diagnostics(self) -> dict[str, Any] | None:
        """The inner optimiser's last-step diagnostics as a dict (a
        :class:`GraphClosureOptimizer`'s ``last_step``), else ``None``."""
        if isinstance(self.optimizer, GraphClosureOptimizer) and is_dataclass(
            self.optimizer.last_step
        ):
            return asdict(self.optimizer.last_step)
        return None

    def hyper_step(
        self, losses: HyperLosses | torch.Tensor, val_loss: torch.Tensor | None = None
    ) -> Hypergradient:
        """dL_v/dλ at the current weights by :attr:`method`, then one outer step on λ.

        Args:
            losses: the closures the method evaluates (:class:`HyperLosses`: L_t and L_v on the
                hyper-step's batches; the inner mini-batches of an unrolled method; the penalty
                for ``curvature="ggn"``). The older call ``hyper_step(train_loss, val_loss)``
                with two loss tensors still works for the implicit method on the Hessian (it
                warns once).
            val_loss: only with the older call.

        Returns:
            The hypergradient and its diagnostics; ``result.failure`` is set when the step was
            skipped (``on_failure="skip"``). λ.grad holds it otherwise.

        Raises:
            HypergradientError: the hypergradient cannot be trusted and ``on_failure="stop"``.
        """
        if isinstance(losses, torch.Tensor):
            losses = self._legacy_losses(losses, val_loss)
        self.hyper_optimizer.zero_grad(set_to_none=True)
        result, state = self.method.hypergradient(
            self.model, self.hparams, self.optimizer, losses, self.method_state
        )
        self.method_state = state  # a failed solve's state too (e.g. a fresh λ̂max estimate)
        if result.failure is None:
            for hparam, grad in zip(self.hparams, result.grads, strict=True):
                hparam.grad = grad.detach().clone()
            self.hyper_optimizer.step()
        elif self.on_failure == "skip":
            self.skipped_hyper_steps += 1
        else:
            raise HypergradientError(result.failure, result.solve)
        return result

    def _legacy_losses(
        self, train_loss: torch.Tensor, val_loss: torch.Tensor | None
    ) -> HyperLosses:
        """HyperLosses of two computed loss tensors (the older ``hyper_step`` call)."""
        if val_loss is None:
            raise TypeError("hyper_step(train_loss, val_loss) needs both loss tensors")
        if not _LEGACY_WARNED:
            _LEGACY_WARNED.append(True)
            warnings.warn(
                "JointOptimizer.hyper_step(train_loss, val_loss) is deprecated: pass "
                "HyperLosses(training_loss=..., validation_loss=...) closures",
                DeprecationWarning,
                stacklevel=3,
            )
        return HyperLosses(lambda: train_loss, lambda: val_loss)

    def state_dict(self) -> dict[str, Any]:
        """Both optimisers' states, the method's state (a solver's warm start, as plain values)
        and the skipped count, for a checkpoint (the model's and λ's own tensors are saved with
        their modules)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "hyper_optimizer": self.hyper_optimizer.state_dict(),
            "method": self.method_state_dict(),
            "skipped_hyper_steps": self.skipped_hyper_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.hyper_optimizer.load_state_dict(state["hyper_optimizer"])
        self.load_method_state_dict(state.get("method"))
        self.skipped_hyper_steps = int(state["skipped_hyper_steps"])

    def method_state_dict(self) -> dict[str, Any]:
        """The method's state between hyper-steps as a checkpoint's plain values."""
        return self.method.state_dict(self.method_state)

    def load_method_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore a :meth:`method_state_dict` (``None`` or empty: the initial state)."""
        self.method_state = self.method.load_state(state)
