"""``solver=unrolled``: the hypergradient by differentiating K steps of the inner optimiser.

Not an inverse-HVP solver (it never solves H x = b, so it does not fit ``solver(matvec, b)``):
a :class:`hpo_cli.core.methods.HypergradientMethod` of its own, which
:meth:`hpo_cli.core.joint.JointOptimizer.hyper_step` calls like the implicit one; it evaluates
``inner_batches`` = K training mini-batches (``losses.inner_training_loss``) and keeps no state.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from hpo_cli.core.hypergradient import Hypergradient
from hpo_cli.core.methods import HypergradientMethod, HyperLosses
from hpo_cli.core.solvers.base import SolveInfo, Status
from hpo_cli.core.unrolled.unroll import unrolled_hypergradient
from hpo_cli.core.unrolled.updates import InnerUpdate, SGDUpdate, State, state_of, update_for
from hpo_cli.core.vectors import all_finite

INNER = ("configured", "sgd")


@dataclass(frozen=True)
class Unrolled(HypergradientMethod):
    """dL_v(w_K(λ))/dλ through K differentiable inner steps from the current weights.

    Args:
        steps: K, the unrolled steps (each on a fresh training mini-batch).
        gradient_checkpointing: gradient checkpointing over the steps: keeps each step's
            inputs (weights, optimiser state) instead of its activations and recomputes the step
            in the reverse pass.
        inner: ``"configured"``: the run's inner optimiser (SGD, Adam, AdamW or RMSprop) from its
            current state (momenta, second moments, step count); ``"sgd"``: plain SGD with step
            ``lr`` (Lorraine et al.'s Theorem 2 setting).
        lr: the SGD step α of ``inner="sgd"``.
    """

    name: ClassVar[str] = "unrolled"
    steps: int = 10
    gradient_checkpointing: bool = False
    inner: str = "configured"
    lr: float = 0.01

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"unrolled.steps must be >= 0, got {self.steps}")
        if self.inner not in INNER:
            raise ValueError(f"unrolled.inner={self.inner!r} is unknown; choose {INNER}")
        if not self.lr > 0:
            raise ValueError(f"unrolled.lr must be > 0, got {self.lr}")

    @property
    def inner_batches(self) -> int:  # type: ignore[override]
        """K: one training mini-batch per unrolled step."""
        return self.steps

    def check(self, optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> None:
        """Raise ``ValueError`` for an inner optimiser that cannot be unrolled."""
        self.update_and_state(optimizer, params)

    def update_and_state(
        self, optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]
    ) -> tuple[InnerUpdate, State]:
        """The differentiable update and its starting state (copies; the optimiser is unchanged)."""
        if self.inner == "sgd":
            update = SGDUpdate(self.lr)
            return update, update.init_state(params)
        update = update_for(optimizer)
        return update, state_of(optimizer, update, params)

    def hypergradient(
        self,
        model: nn.Module,
        hparams: Sequence[torch.Tensor],
        optimizer: torch.optim.Optimizer,
        losses: HyperLosses,
        state: None = None,
    ) -> tuple[Hypergradient, None]:
        """The unrolled hypergradient through K steps on ``losses.inner_training_loss(k)``,
        k < K, then ``losses.validation_loss()``, with :class:`Hypergradient`'s diagnostics:
        ``hvps`` counts the K Hessian-vector products of the reverse pass; ``residual`` is
        ``None``. No state (``state`` is ignored, ``None`` returned)."""
        if losses.inner_training_loss is None and self.steps > 0:
            raise ValueError("solver=unrolled needs losses.inner_training_loss (K mini-batches)")
        training_loss = losses.inner_training_loss or (lambda k: losses.training_loss())
        params = list(model.parameters())
        update, state = self.update_and_state(optimizer, params)
        started = time.perf_counter()
        grads, val_loss = unrolled_hypergradient(
            model,
            hparams,
            update,
            state,
            training_loss,
            losses.validation_loss,
            self.steps,
            gradient_checkpointing=self.gradient_checkpointing,
        )
        info = SolveInfo(
            solver="unrolled",
            status=Status.APPROXIMATION,
            iterations=self.steps,
            matvecs=self.steps,
            message=f"{self.steps} steps of {type(update).__name__}",
            extras={"val_loss_after": val_loss, "time_s": time.perf_counter() - started},
        )
        failure = None
        if not all_finite(grads):
            failure = f"the unrolled hypergradient is not finite ({info.message})"
        return Hypergradient(grads, info, None, self.steps, failure), None
