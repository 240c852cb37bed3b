"""Differentiable inner-optimiser updates: SGD, Adam(W) and RMSprop as pure functions.

Each update maps (w, g, state) to (w', state') with new tensors, never in place, so that an
autograd graph through g = ∂L_t/∂w (built with ``create_graph=True``) runs through every step:
reverse mode then gives d w_K / dλ for unrolled differentiation (:mod:`hpo_cli.core.unrolled`).
The arithmetic is ``torch.optim``'s single-tensor implementation, operation for operation, so K
steps agree with ``torch.optim``'s own to rounding (1e-12 in float64, tested), the state included.

Vectors are lists of tensors shaped like the parameters; a state is a dict of such lists (one
tensor per parameter, or ``None`` before the buffer exists, as in ``torch.optim``) plus the step
count ``step``. :func:`from_optimizer` reads the update and the current state of a live
``torch.optim`` optimiser (its hyperparameters from the param group, its buffers from
``optimizer.state``), detached, so unrolling never touches the optimiser itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

Params = Sequence[torch.Tensor]
State = dict[str, Any]
"""``{"step": int, buffer name: [tensor or None per parameter], ...}``."""


def safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """√x with derivative 0 (not ∞) where x = 0: a weight whose gradient has always been exactly
    zero (a dead ReLU unit) would otherwise turn the reverse pass into ∞·0 = NaN. Same values."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)).sqrt(), 0.0)


class InnerUpdate(Protocol):
    """One differentiable optimiser step: ``update(params, grads, state) -> (params, state)``."""

    def init_state(self, params: Sequence[torch.Tensor]) -> State: ...

    def __call__(
        self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], state: State
    ) -> tuple[list[torch.Tensor], State]: ...


@dataclass(frozen=True)
class SGDUpdate:
    """``torch.optim.SGD``: with weight decay c, momentum μ, dampening τ and Nesterov,

    g ← g + c w;   b ← g (first step) or μ b + (1 − τ) g;   d = g + μ b (Nesterov) or b;
    w ← w − η d        (d = g without momentum).
    """

    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    maximize: bool = False

    def init_state(self, params: Sequence[torch.Tensor]) -> State:
        return {"step": 0, "momentum_buffer": [None for _ in params]}

    def __call__(
        self, params: Params, grads: Params, state: State
    ) -> tuple[list[torch.Tensor], State]:
        new_params, buffers = [], []
        for w, g, b in zip(params, grads, state["momentum_buffer"], strict=True):
            g = -g if self.maximize else g
            if self.weight_decay != 0:
                g = g + self.weight_decay * w
            if self.momentum != 0:
                b = g if b is None else self.momentum * b + (1 - self.dampening) * g
                g = g + self.momentum * b if self.nesterov else b
            buffers.append(b)
            new_params.append(w - self.lr * g)
        return new_params, {"step": state["step"] + 1, "momentum_buffer": buffers}


@dataclass(frozen=True)
class AdamUpdate:
    """``torch.optim.Adam`` (``decoupled=False``) and ``AdamW`` (``decoupled=True``): at step t,

    g ← g + c w (Adam) or w ← (1 − η c) w (AdamW);
    m ← β₁ m + (1 − β₁) g;   v ← β₂ v + (1 − β₂) g²;   v̂ = max(v̂, v) with amsgrad, else v;
    w ← w − η/(1 − β₁ᵗ) · m / (√v̂ / √(1 − β₂ᵗ) + ε).
    """

    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False
    decoupled: bool = False
    maximize: bool = False

    def init_state(self, params: Sequence[torch.Tensor]) -> State:
        state: State = {
            "step": 0,
            "exp_avg": [torch.zeros_like(w) for w in params],
            "exp_avg_sq": [torch.zeros_like(w) for w in params],
        }
        if self.amsgrad:
            state["max_exp_avg_sq"] = [torch.zeros_like(w) for w in params]
        return state

    def __call__(
        self, params: Params, grads: Params, state: State
    ) -> tuple[list[torch.Tensor], State]:
        beta1, beta2 = self.betas
        step = state["step"] + 1
        correction1, correction2_sqrt = 1 - beta1**step, (1 - beta2**step) ** 0.5
        new: State = {"step": step, "exp_avg": [], "exp_avg_sq": []}
        if self.amsgrad:
            new["max_exp_avg_sq"] = []
        new_params = []
        for i, (w, g) in enumerate(zip(params, grads, strict=True)):
            g = -g if self.maximize else g
            if self.weight_decay != 0:
                if self.decoupled:
                    w = w * (1 - self.lr * self.weight_decay)
                else:
                    g = g + self.weight_decay * w
            m = torch.lerp(state["exp_avg"][i], g, 1 - beta1)
            v = beta2 * state["exp_avg_sq"][i] + (1 - beta2) * g * g
            new["exp_avg"].append(m)
            new["exp_avg_sq"].append(v)
            if self.amsgrad:
                v = torch.maximum(state["max_exp_avg_sq"][i], v)
                new["max_exp_avg_sq"].append(v)
            denominator = safe_sqrt(v) / correction2_sqrt + self.eps
            new_params.append(w - (self.lr / correction1) * (m / denominator))
        return new_params, new


@dataclass(frozen=True)
class RMSpropUpdate:
    """``torch.optim.RMSprop``: with smoothing a, weight decay c and momentum μ,

    g ← g + c w;   s ← a s + (1 − a) g²;   ḡ ← a ḡ + (1 − a) g (centered);
    r = √(s − ḡ²) (centered) or √s, plus ε;
    b ← μ b + g / r, w ← w − η b (momentum), else w ← w − η g / r.
    """

    lr: float
    alpha: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    centered: bool = False
    maximize: bool = False

    def init_state(self, params: Sequence[torch.Tensor]) -> State:
        state: State = {"step": 0, "square_avg": [torch.zeros_like(w) for w in params]}
        if self.momentum > 0:
            state["momentum_buffer"] = [torch.zeros_like(w) for w in params]
        if self.centered:
            state["grad_avg"] = [torch.zeros_like(w) for w in params]
        return state

    def __call__(
        self, params: Params, grads: Params, state: State
    ) -> tuple[list[torch.Tensor], State]:
        new: State = {"step": state["step"] + 1, "square_avg": []}
        for key in ("momentum_buffer", "grad_avg"):
            if key in state:
                new[key] = []
        new_params = []
        for i, (w, g) in enumerate(zip(params, grads, strict=True)):
            g = -g if self.maximize else g
            if self.weight_decay != 0:
                g = g + self.weight_decay * w
            s = self.alpha * state["square_avg"][i] + (1 - self.alpha) * g * g
            new["square_avg"].append(s)
            if self.centered:
                mean = torch.lerp(state["grad_avg"][i], g, 1 - self.alpha)
                new["grad_avg"].append(mean)
                s = s - mean * mean
            root = safe_sqrt(s) + self.eps
            if self.momentum > 0:
                b = self.momentum * state["momentum_buffer"][i] + g / root
                new["momentum_buffer"].append(b)
                new_params.append(w - self.lr * b)
            else:
                new_params.append(w - self.lr * (g / root))
        return new_params, new


def _float(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def update_for(optimizer: torch.optim.Optimizer) -> InnerUpdate:
    """The differentiable update of a ``torch.optim`` SGD, Adam, AdamW or RMSprop optimiser, with
    the hyperparameters of its (single) param group.

    Raises:
        ValueError: another optimiser, or several param groups.
    """
    if len(optimizer.param_groups) != 1:
        raise ValueError(
            f"unrolling needs an inner optimiser with one param group, got "
            f"{len(optimizer.param_groups)}"
        )
    group = optimizer.param_groups[0]
    lr, maximize = _float(group["lr"]), bool(group.get("maximize", False))
    if isinstance(optimizer, torch.optim.SGD):
        return SGDUpdate(
            lr,
            momentum=group["momentum"],
            dampening=group["dampening"],
            nesterov=group["nesterov"],
            weight_decay=group["weight_decay"],
            maximize=maximize,
        )
    if isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        return AdamUpdate(
            lr,
            betas=tuple(_float(b) for b in group["betas"]),
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            amsgrad=group["amsgrad"],
            decoupled=bool(group.get("decoupled_weight_decay", False))
            or isinstance(optimizer, torch.optim.AdamW),
            maximize=maximize,
        )
    if isinstance(optimizer, torch.optim.RMSprop):
        return RMSpropUpdate(
            lr,
            alpha=group["alpha"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            centered=group["centered"],
            maximize=maximize,
        )
    raise ValueError(
        f"unrolling supports SGD, Adam, AdamW and RMSprop inner optimisers, not "
        f"{type(optimizer).__name__}; use solver.inner=sgd (plain SGD with step solver.lr)"
    )


def state_of(
    optimizer: torch.optim.Optimizer, update: InnerUpdate, params: Sequence[torch.Tensor]
) -> State:
    """Detached copies of ``optimizer``'s buffers for ``params`` in ``update``'s layout: the
    fresh state (``update.init_state``) where the optimiser has not stepped yet."""
    state = update.init_state(params)
    saved = [optimizer.state.get(w, {}) for w in params]
    if not any(saved):
        return state
    state["step"] = int(_float(saved[0].get("step", 0)))
    for key, buffers in state.items():
        if key == "step":
            continue
        for i, entry in enumerate(saved):
            value = entry.get(key)
            buffers[i] = None if value is None else value.detach().clone()
    return state
