"""Unrolled (truncated reverse-mode) differentiation through K steps of the inner optimiser.

Starting from the current weights w₀ and the inner optimiser's current state s₀, K steps

    g_k = ∂L_t^{(k)}/∂w (w_k, λ),     (w_{k+1}, s_{k+1}) = U(w_k, g_k, s_k),     k = 0..K−1,

on training mini-batches k (``training_loss(k)``) with a differentiable update U
(:mod:`hpo_cli.core.unrolled.updates`) make w_K a function of λ; the unrolled hypergradient is

    d L_v(w_K(λ), λ) / dλ

by reverse mode through all K steps (each g_k built with ``create_graph=True``). It is the exact
derivative of what K steps of training do to the validation loss, whatever the optimiser, and
needs no minimiser; with plain SGD started at a minimiser it equals the IFT hypergradient with the
K-term Neumann series α Σ_{j=0}^{K−1} (I − αH)^j (Lorraine et al., 2020, Theorem 2; tested).

Cost and memory: the forward pass is K gradient evaluations with their graphs, the reverse pass
about K Hessian-vector products and K mixed products. Memory grows linearly in K (every step's
activations and update are kept); ``gradient_checkpointing=True`` keeps only each step's inputs
(w_k, s_k) and recomputes the step — its forward pass and gradient — in the reverse pass
(``torch.utils.checkpoint``): still linear in K, but with the weights and optimiser state per
step instead of the activations (4× less on the default MLP, at about 3× the time;
``benchmarks/unrolled_memory.py``). The weights are substituted with
``torch.func.functional_call``: the model's parameters, the caller's optimiser and the model's
buffers (batch-norm statistics, restored) are unchanged.

Data parallel (:mod:`hpo_cli.core.distributed`): each g_k is the ranks' mean (a differentiable
all-reduce, whose reverse pass all-reduces the adjoints), so every rank unrolls the same
trajectory; the reverse pass of rank r then holds r's part of d(Σ_r L_v,r)/dλ, and their mean
is dL_v/dλ on the union of the validation shards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint as checkpointed

from hpo_cli.core.distributed import all_reduce_mean_, differentiable_mean
from hpo_cli.core.unrolled.updates import InnerUpdate, State

TrainingLoss = Callable[[int], torch.Tensor]
"""``training_loss(k)``: the scalar L_t(w, λ) of mini-batch k, computed by calling the model (whose
weights are substituted); the same k must give the same batch (checkpointing recomputes it)."""

ValidationLoss = Callable[[], torch.Tensor]
"""``validation_loss()``: the scalar L_v(w, λ), computed by calling the model."""


class _Call(nn.Module):
    """Holds the model so that ``functional_call`` substitutes its weights for any function of it
    (a hyperparameter module's loss calls ``model(x)`` and reads ``model.parameters()``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, function: Callable[[], torch.Tensor]) -> torch.Tensor:
        return function()


def evaluate_at(
    model: nn.Module, params: Sequence[torch.Tensor], function: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """``function()`` with ``model``'s parameters (in ``model.parameters()`` order) replaced by
    ``params`` for the duration of the call."""
    names = [f"model.{name}" for name, _ in model.named_parameters()]
    return functional_call(_Call(model), dict(zip(names, params, strict=True)), (function,))


def _flatten_state(state: State) -> tuple[list[str], list[torch.Tensor | None]]:
    keys = sorted(k for k in state if k != "step")
    return keys, [t for k in keys for t in state[k]]


def unroll(
    model: nn.Module,
    update: InnerUpdate,
    state: State,
    training_loss: TrainingLoss,
    steps: int,
    *,
    create_graph: bool = True,
    gradient_checkpointing: bool = False,
) -> tuple[list[torch.Tensor], State]:
    """(w_K, s_K) after ``steps`` updates from the model's current weights and ``state``.

    With ``create_graph`` the result is differentiable in λ (and everything else the losses
    use); without, it is the plain training trajectory (for finite differences).
    """
    params = [w.detach().clone().requires_grad_(True) for w in model.parameters()]
    count = len(params)

    def step(k: int, state_step: int, keys: list[str], *tensors: torch.Tensor | None):
        weights = list(tensors[:count])
        buffers = list(tensors[count:])
        current: State = {"step": state_step}
        for i, key in enumerate(keys):
            current[key] = buffers[i * count : (i + 1) * count]
        with torch.enable_grad():
            loss = evaluate_at(model, weights, lambda: training_loss(k))
            grads = torch.autograd.grad(
                loss, weights, create_graph=create_graph, materialize_grads=True
            )
            grads = differentiable_mean(grads)  # data parallel: the ranks' mean
        new_weights, new_state = update(weights, grads, current)
        new_keys, new_buffers = _flatten_state(new_state)
        if not create_graph:
            new_weights = [w.detach().requires_grad_(True) for w in new_weights]
            new_buffers = [None if b is None else b.detach() for b in new_buffers]
        return (*new_weights, *new_buffers), new_keys, new_state["step"]

    for k in range(steps):
        keys, buffers = _flatten_state(state)
        if gradient_checkpointing and create_graph:
            # The step count and buffer layout are plain Python: recomputed identically.
            layout: dict[str, object] = {}

            def run(*tensors, k=k, step_count=state["step"], keys=keys, layout=layout):
                outputs, layout["keys"], layout["step"] = step(k, step_count, keys, *tensors)
                return outputs

            outputs = checkpointed(run, *params, *buffers, use_reentrant=False)
            new_keys, new_step = layout["keys"], layout["step"]
        else:
            outputs, new_keys, new_step = step(k, state["step"], keys, *params, *buffers)
        params = list(outputs[:count])
        state = {"step": new_step}
        for i, key in enumerate(new_keys):
            state[key] = list(outputs[count + i * count : count + (i + 1) * count])
    return params, state


def unrolled_hypergradient(
    model: nn.Module,
    hparams: Sequence[torch.Tensor],
    update: InnerUpdate,
    state: State,
    training_loss: TrainingLoss,
    validation_loss: ValidationLoss,
    steps: int,
    *,
    gradient_checkpointing: bool = False,
) -> tuple[tuple[torch.Tensor, ...], float]:
    """d L_v(w_K(λ), λ)/dλ through ``steps`` differentiable updates, and L_v(w_K).

    Args:
        model: the network; its weights w₀ are the starting point (left unchanged).
        hparams: the hyperparameters λ (leaf tensors the losses use).
        update: the differentiable optimiser step U, e.g. :func:`updates.update_for`.
        state: the optimiser state s₀ (:func:`updates.state_of`; ``update.init_state`` for a
            fresh optimiser).
        training_loss: L_t of mini-batch k, for k = 0..steps−1.
        validation_loss: L_v, evaluated at w_K.
        steps: K ≥ 0 (K = 0: only the direct term ∂L_v/∂λ).
        gradient_checkpointing: recompute each step in the reverse pass instead of storing it.

    Returns:
        dL_v/dλ shaped like ``hparams`` (zeros where λ has no effect), and L_v(w_K).
    """
    saved_buffers = [b.detach().clone() for b in model.buffers()]
    try:
        params, _ = unroll(
            model,
            update,
            state,
            training_loss,
            steps,
            gradient_checkpointing=gradient_checkpointing,
        )
        val_loss = evaluate_at(model, params, validation_loss)
        grads = torch.autograd.grad(val_loss, list(hparams), allow_unused=True)
    finally:
        with torch.no_grad():
            for buffer, saved in zip(model.buffers(), saved_buffers, strict=True):
                buffer.copy_(saved)
    grads = all_reduce_mean_(
        [torch.zeros_like(h) if g is None else g for h, g in zip(hparams, grads, strict=True)]
    )  # data parallel: each rank's part of d(Σ_r L_v,r)/dλ, summed and divided by N
    return tuple(grads), float(all_reduce_mean_([val_loss.detach()])[0])
