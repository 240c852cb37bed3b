"""The peers' rows of ``benchmarks.end_to_end``: the same HPO problem written with torchopt, betty
and higher, each as its users write it, to the same budget as hpo-run.

* torchopt: the plain loop (:class:`benchmarks.common.plain_loop.Loop`) whose hyper-step is
  torchopt's implicit differentiation: a solver function decorated with
  ``torchopt.diff.implicit.custom_root(torch.func.grad(L_t), argnums=1, solve=...)`` that returns
  the weights the inner phase reached (the root of ∂L_t/∂w = 0), the validation loss of that
  solution differentiated by autograd. The linear solve is torchopt's Neumann series,
  ``linear_solve.solve_inv(ns=True, maxiter=3, alpha=α)`` (4 terms, 3 products, as hpo-run's
  default), α = 1/λ̂max from 10 power iterations (:func:`neumann_alpha`) at the solution, the
  plain loop's estimate; torchopt builds its own gradient graph for the solve, so that estimate
  costs a gradient graph of its own.
* betty: an ``Engine`` with an inner ``ImplicitProblem`` (the model, Adam on L_t; its batches of
  ``batch_size`` from a loader) and an outer one (θ, RMSprop on the validation loss of the
  inner model; the hyper-step's validation batches), ``type="neumann"``,
  ``unroll_steps = inner_steps``, ``neumann_iterations = 3`` (4 terms) and α set before each
  hyper-step from the same 10 power iterations (betty's ``Config`` holds one fixed α: the outer
  problem's ``training_step`` writes ``inner.config.neumann_alpha``, which betty's ``neumann``
  reads when it runs; a step whose λ̂max is not positive keeps the last α). As betty defines
  it, the Hessian and the mixed product are taken on the inner problem's current batch (the
  last inner mini-batch), not on ``hyper_train_batch``; the inner loss builds softplus(θ)'s
  graph every step (betty differentiates it only at the hyper-step).
* higher: the plain loop whose hyper-step unrolls K = ``solver.steps`` differentiable steps of
  the run's Adam from its current state (``higher.innerloop_ctx(model, optimizer,
  copy_initial_weights=True)``) on K fresh mini-batches of ``batch_size``, then differentiates
  the validation loss of the unrolled weights with respect to θ, as hpo-run's ``solver=unrolled``
  (``inner=configured``); the weights themselves are not moved by the K steps.

The peers are the optional ``bench`` extra; each is imported inside its row.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig
from torch.nn import functional as F

from benchmarks.common.plain_loop import TERMS, Batch, Loop, Vector, power_alpha, results

PEERS = {"torchopt": "torchopt", "betty": "betty", "higher": "higher"}
"""Each peer row's kind and the library it needs."""


def neumann_alpha(params: Vector, train_loss: torch.Tensor, val_loss: torch.Tensor) -> float | None:
    """α = 1/λ̂max of H = ∂²L_t/∂w² by power iteration from v = ∂L_v/∂w (the plain loop's
    estimate); ``val_loss``'s graph is kept."""
    v = list(torch.autograd.grad(val_loss, params, retain_graph=True))
    g = torch.autograd.grad(train_loss, params, create_graph=True)
    return power_alpha(lambda x: list(torch.autograd.grad(g, params, x, retain_graph=True)), v)


# --------------------------------------------------------------------------------------------
# torchopt
# --------------------------------------------------------------------------------------------


def torchopt_hypergradient(loop: Loop, train: Batch, val: Batch) -> Vector | None:
    """dL_v/dθ at the current weights by torchopt's ``custom_root`` with its Neumann solve
    (4 terms, α from :func:`neumann_alpha`); ``None`` when λ̂max is not positive."""
    import torchopt

    names = [name for name, _ in loop.model.named_parameters()]

    def at(weights: tuple[torch.Tensor, ...]) -> Any:
        return lambda x: torch.func.functional_call(
            loop.model, dict(zip(names, weights, strict=True)), (x,)
        )

    def objective(weights: tuple, thetas: tuple, x: torch.Tensor, y: torch.Tensor):
        decay = [F.softplus(theta) for theta in thetas]
        return loop.training_loss((x, y), decay, at(weights), list(weights))

    alpha = neumann_alpha(
        loop.params,
        loop.training_loss(train, loop.decay()),
        F.cross_entropy(loop.model(val[0]), val[1]),
    )
    if alpha is None:
        return None
    solve = torchopt.linear_solve.solve_inv(ns=True, maxiter=TERMS - 1, alpha=alpha)

    @torchopt.diff.implicit.custom_root(torch.func.grad(objective), argnums=1, solve=solve)
    def solution(weights: tuple, thetas: tuple, x: torch.Tensor, y: torch.Tensor):
        return weights  # the inner phase has run: the root is the weights it reached

    weights = solution(tuple(p.detach() for p in loop.params), tuple(loop.thetas), *train)
    val_loss = F.cross_entropy(at(weights)(val[0]), val[1])
    return list(torch.autograd.grad(val_loss, loop.thetas))


def torchopt_step(loop: Loop) -> Vector | None:
    train, val = loop.hyper_batches()
    return torchopt_hypergradient(loop, train, val)


def torchopt_run(cfg: DictConfig) -> dict[str, float]:
    return Loop(cfg).run(torchopt_step)


# --------------------------------------------------------------------------------------------
# higher
# --------------------------------------------------------------------------------------------


def higher_hypergradient(loop: Loop, batches: list[Batch], val: Batch) -> Vector:
    """dL_v(w_K)/dθ through K = len(batches) differentiable Adam steps from the current weights
    and optimiser state (``higher.innerloop_ctx``); the weights and the optimiser are unchanged."""
    import higher

    with higher.innerloop_ctx(loop.model, loop.optimizer, copy_initial_weights=True) as (
        fmodel,
        diffopt,
    ):
        decay = loop.decay()
        for batch in batches:
            diffopt.step(loop.training_loss(batch, decay, fmodel, list(fmodel.parameters())))
        val_loss = F.cross_entropy(fmodel(val[0]), val[1])
        return list(torch.autograd.grad(val_loss, loop.thetas))


def higher_step(loop: Loop) -> Vector:
    """The runner's draws: the hyper-step's batches (the training one unused by the unrolled
    method), then K mini-batches of ``batch_size``."""
    _, val = loop.hyper_batches()
    batches = [
        loop.batch(loop.data.train, loop.cfg.batch_size) for _ in range(loop.cfg.solver.steps)
    ]
    return higher_hypergradient(loop, batches, val)


def higher_run(cfg: DictConfig) -> dict[str, float]:
    return Loop(cfg).run(higher_step)


# --------------------------------------------------------------------------------------------
# betty
# --------------------------------------------------------------------------------------------


class Batches:
    """An endless loader of ``size``-example batches of ``split`` (betty calls ``iter`` on it
    and ``next`` on that)."""

    def __init__(self, loop: Loop, split: Any, size: int | None) -> None:
        self.loop, self.split, self.size = loop, split, size

    def __iter__(self) -> Any:
        while True:
            yield self.loop.batch(self.split, self.size)


def betty_engine(loop: Loop, val_losses: list[float]) -> Any:
    """betty's ``Engine`` for ``loop``'s problem (see the module docstring); every outer step
    appends the validation loss on the whole split to ``val_losses``."""
    from betty.configs import Config, EngineConfig
    from betty.engine import Engine
    from betty.problems import ImplicitProblem

    cfg = loop.cfg

    class Inner(ImplicitProblem):
        def training_step(self, batch: Batch) -> torch.Tensor:
            decay = [F.softplus(theta) for theta in self.outer.trainable_parameters()]
            return loop.training_loss(batch, decay)

    class Outer(ImplicitProblem):
        def training_step(self, batch: Batch) -> torch.Tensor:
            val_loss = F.cross_entropy(self.inner(batch[0]), batch[1])
            train_loss = self.inner.training_step(self.inner.cur_batch)
            alpha = neumann_alpha(self.inner.trainable_parameters(), train_loss, val_loss)
            if alpha is not None:
                self.inner.config.neumann_alpha = alpha
            return val_loss

    class Validated(Engine):
        def validation(self) -> dict[str, float]:
            val_losses.append(loop.val_loss())
            return {"val_loss": val_losses[-1]}

    device = str(loop.data.train.inputs.device)
    inner_config = Config(
        type="neumann",
        unroll_steps=cfg.inner_steps,
        neumann_iterations=TERMS - 1,
        neumann_alpha=1.0,
    )
    inner = Inner(
        name="inner",
        config=inner_config,
        module=loop.model,
        optimizer=loop.optimizer,
        train_data_loader=Batches(loop, loop.data.train, cfg.batch_size),
        device=device,
    )
    outer = Outer(
        name="outer",
        config=Config(),
        module=loop.hyper,
        optimizer=loop.hyper_optimizer,
        train_data_loader=Batches(loop, loop.data.val, cfg.hyper_val_batch),
        device=device,
    )
    engine_config = EngineConfig(
        train_iters=cfg.outer_steps * cfg.inner_steps, valid_step=cfg.inner_steps
    )
    return Validated(
        problems=[outer, inner],
        config=engine_config,
        dependencies={"u2l": {outer: [inner]}, "l2u": {inner: [outer]}},
    )


def betty_run(cfg: DictConfig) -> dict[str, float]:
    loop = Loop(cfg)
    val_losses = [loop.val_loss()]
    betty_engine(loop, val_losses).run()
    return results(loop.model, loop.data, val_losses)
