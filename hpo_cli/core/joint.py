"""Joint optimisation of weights w and hyperparameters λ, around any training loop.

The object behind ``hpo-run``'s loop and the few lines a hand-written PyTorch loop needs::

    joint = JointOptimizer(model, list(hyper.parameters()), optimizer, hyper_optimizer,
                           solver=Neumann(terms=10, alpha="auto"))
    for outer in range(outer_steps):
        for inner in range(inner_steps):
            joint.inner_step(lambda: train_loss_fn(model, next(train_batches)))  # w ← w − η ∇_w L_t
        result = joint.hyper_step(train_loss_fn(model, batch), val_loss_fn(model, val_batch))

``hpo-run``'s loop (:mod:`hpo_cli.runner.loop.train`) is exactly this, so a hand-written loop
and the runner share one code path; ``examples/own_loop.py`` is a complete script. In PyTorch
Lightning, the same calls go in ``training_step`` with ``automatic_optimization = False`` (the
optimisers are the module's own; ``JointOptimizer`` only needs them passed in).

One outer step is ``inner_steps`` calls of :meth:`JointOptimizer.inner_step` (the inner
optimiser on L_t(w, λ)) and one :meth:`JointOptimizer.hyper_step`: the IFT hypergradient
dL_v/dλ (:func:`hpo_cli.core.hypergradient.hypergradient`), then one step of the outer optimiser
on λ. A hypergradient that cannot be trusted (a diverged solver, non-finite values) is either an
error (``on_failure="stop"``) or a skipped hyper-step that is counted (``on_failure="skip"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from hpo_cli.core.curvature import loss_and_outputs
from hpo_cli.core.hvp import MatVec
from hpo_cli.core.hypergradient import Hypergradient, HypergradientError, hypergradient
from hpo_cli.core.solvers import InverseHVPSolver

ON_FAILURE = ("stop", "skip")


class JointOptimizer:
    """Inner steps on w and IFT hyper-steps on λ, with a failure policy.

    Args:
        model: the network whose parameters are the weights w.
        hparams: the hyperparameters λ (leaf tensors the outer optimiser owns).
        optimizer: the inner optimiser over ``model.parameters()`` (any ``torch.optim``
            optimiser; one with ``closure_returns_graph = True``, such as Hessian-free, gets a
            closure returning (loss with graph, model outputs)).
        hyper_optimizer: the outer optimiser over ``hparams``.
        solver: the inverse-HVP solver of the hypergradient, or a solver that differentiates the
            inner optimisation itself (``solver.unrolls``; see :meth:`unrolled_hyper_step`).
        on_failure: ``"stop"`` raises :class:`HypergradientError` on an untrustworthy
            hypergradient; ``"skip"`` leaves λ unchanged and counts it in
            :attr:`skipped_hyper_steps`.
    """

    def __init__(
        self,
        model: nn.Module,
        hparams: Sequence[torch.Tensor],
        optimizer: torch.optim.Optimizer,
        hyper_optimizer: torch.optim.Optimizer,
        solver: InverseHVPSolver,
        *,
        on_failure: str = "stop",
    ) -> None:
        if on_failure not in ON_FAILURE:
            raise ValueError(f"on_failure={on_failure} is invalid: must be one of {ON_FAILURE}")
        self.model = model
        self.hparams = list(hparams)
        self.optimizer = optimizer
        self.hyper_optimizer = hyper_optimizer
        self.solver = solver
        self.on_failure = on_failure
        self.skipped_hyper_steps = 0

    def inner_step(self, training_loss: Callable[[], torch.Tensor]) -> torch.Tensor:
        """One step of the inner optimiser on ``training_loss()`` = L_t(w, λ) of a mini-batch.

        Uses ``optimizer.step(closure)``, so optimisers that re-evaluate the loss (L-BFGS, line
        searches) work unchanged. Returns the loss, detached.
        """
        params = list(self.model.parameters())
        returns_graph = getattr(self.optimizer, "closure_returns_graph", False)

        def closure() -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
            if returns_graph:  # Hessian-free differentiates the loss itself
                return loss_and_outputs(self.model, training_loss)
            self.optimizer.zero_grad(set_to_none=True)
            loss = training_loss()
            loss.backward(inputs=params)
            return loss

        return self.optimizer.step(closure).detach()

    def hyper_step(
        self, train_loss: torch.Tensor, val_loss: torch.Tensor, curvature: MatVec | None = None
    ) -> Hypergradient:
        """dL_v/dλ at the current weights, then one outer-optimiser step on λ.

        Args:
            train_loss: scalar L_t(w, λ) with its graph, on the batch that defines H.
            val_loss: scalar L_v(w, λ) with its graph (its graph is freed, as by ``backward``).
            curvature: the matrix the solver inverts in place of H, as a matvec (e.g. the
                Gauss-Newton one of :func:`hpo_cli.core.curvature.curvature_matvec`).

        Returns:
            The hypergradient and its diagnostics; ``result.failure`` is set when the step was
            skipped (``on_failure="skip"``).

        Raises:
            HypergradientError: the hypergradient cannot be trusted and ``on_failure="stop"``.
        """
        self.hyper_optimizer.zero_grad(set_to_none=True)
        params = list(self.model.parameters())
        observe = getattr(self.solver, "observe_optimizer", None)
        if observe is not None:  # a solver preconditioned by the optimiser's second moments
            observe(self.optimizer, params)
        result = hypergradient(
            train_loss,
            val_loss,
            params,
            self.hparams,
            self.solver,
            raise_on_failure=False,
            write_grad=True,
            curvature=curvature,
        )
        return self._apply(result)

    def unrolled_hyper_step(
        self,
        training_loss: Callable[[int], torch.Tensor],
        validation_loss: Callable[[], torch.Tensor],
    ) -> Hypergradient:
        """The hyper-step of a solver that differentiates the inner optimisation itself
        (``solver.unrolls``, e.g. :class:`hpo_cli.core.unrolled.Unrolled`): it calls
        ``solver.hypergradient(model, hparams, optimizer, training_loss, validation_loss)``, which
        leaves the weights and the inner optimiser's state unchanged.

        Args:
            training_loss: L_t(w, λ) of training mini-batch k (the same batch for the same k),
                computed by calling the model.
            validation_loss: L_v(w, λ), computed by calling the model.
        """
        self.hyper_optimizer.zero_grad(set_to_none=True)
        result = self.solver.hypergradient(
            self.model, self.hparams, self.optimizer, training_loss, validation_loss
        )
        if result.failure is None:
            for hparam, grad in zip(self.hparams, result.grads, strict=True):
                hparam.grad = grad.detach().clone()
        return self._apply(result)

    def _apply(self, result: Hypergradient) -> Hypergradient:
        """Step λ along ``λ.grad`` (already written), or apply the failure policy."""
        if result.failure is None:
            self.hyper_optimizer.step()
        elif self.on_failure == "skip":
            self.skipped_hyper_steps += 1
        else:
            raise HypergradientError(result.failure, result.solve)
        return result

    def state_dict(self) -> dict[str, Any]:
        """Both optimisers' states and the skipped count, for a hand-written loop's checkpoint
        (the model's and λ's own tensors are saved with their modules)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "hyper_optimizer": self.hyper_optimizer.state_dict(),
            "skipped_hyper_steps": self.skipped_hyper_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.hyper_optimizer.load_state_dict(state["hyper_optimizer"])
        self.skipped_hyper_steps = int(state["skipped_hyper_steps"])
