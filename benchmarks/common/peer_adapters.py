"""The peer libraries (torchopt, betty, curvlinops, higher): which of them import, and how each
computes a hypergradient, as ``benchmarks.peers`` and ``benchmarks.solvers_in_the_loop`` call them.

Every adapter is built once and returns a call that builds the losses anew and returns
dL_v/dλ as a list shaped like the hyperparameters. The linear-solver peers start from
:class:`IFTPieces` (one gradient graph, the autograd HVP w ↦ Hv, the right-hand side ∂L_v/∂w and
the mixed product −(∂²L_t/∂λ∂w)ᵀ x); higher unrolls K differentiable SGD steps instead. The peers
are the optional ``bench`` extra: each is imported inside its adapter, only when it is used.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Protocol

import torch
from torch import nn

from hpo_cli.core.vectors import add

Vector = list[torch.Tensor]
Method = Callable[[], Vector]
PEERS = {"torchopt": "torchopt", "betty": "betty", "curvlinops": "curvlinops", "higher": "higher"}


def peer_status() -> dict[str, str]:
    """Each peer's version, or "not available: <reason>" when it does not import."""
    status = {}
    for name, module in PEERS.items():
        try:
            imported = importlib.import_module(module)
        except Exception as error:
            status[name] = (
                f"not available: {type(error).__name__}: {error} "
                "(`make install-bench` or `pip install -e '.[bench]'`)"
            )
            continue
        version = getattr(imported, "__version__", None)
        if version is None:
            from importlib.metadata import version as dist_version

            dist = {"betty": "betty-ml", "curvlinops": "curvlinops-for-pytorch"}.get(name, name)
            version = dist_version(dist)
        status[name] = str(version)
    return status


def require_peers(status: dict[str, str], wanted: bool) -> list[str]:
    """The peers that do not import; with ``wanted``, exit 1 in one line when there are any."""
    missing = [name for name, value in status.items() if value.startswith("not available")]
    if wanted and missing:
        print(
            f"error: --peers: not installed: {', '.join(missing)} (run `make install-bench`)",
            file=sys.stderr,
        )
        raise SystemExit(1)
    return missing


def add_peers_flag(parser: argparse.ArgumentParser) -> None:
    """``--peers``: the run needs the peer libraries (``make bench-peers``)."""
    parser.add_argument(
        "--peers",
        action="store_true",
        help="require the peer libraries: exit 1 in one line when one does not import",
    )


# --------------------------------------------------------------------------------------------
# What the adapters are given
# --------------------------------------------------------------------------------------------


class Losses(Protocol):
    """What a linear-solver adapter needs: the weights w, the hyperparameters λ and the two
    losses, built anew at each call (``benchmarks.peers``' problems,
    ``benchmarks.solvers_in_the_loop``'s states)."""

    @property
    def params(self) -> Vector: ...

    @property
    def hparams(self) -> Vector: ...

    def train_loss(self) -> torch.Tensor: ...

    def val_loss(self) -> torch.Tensor: ...


@dataclass
class Problem:
    """A model, per-weight hyperparameters and two losses, functional in the weights' module."""

    name: str
    model: nn.Module
    hparams: Vector
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    data_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    penalty: Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], torch.Tensor]
    reference: Vector | None = None  # the exact hypergradient, where known

    @property
    def params(self) -> Vector:
        return list(self.model.parameters())

    def train_loss(self, model: Callable[..., torch.Tensor] | None = None, **kw: Any) -> Any:
        model = model or self.model
        weights = kw.get("params") or self.params
        return self.data_loss(model(self.train_x, **kw), self.train_y) + self.penalty(
            weights, self.hparams
        )

    def val_loss(self, model: Callable[..., torch.Tensor] | None = None, **kw: Any) -> Any:
        model = model or self.model
        return self.data_loss(model(self.val_x, **kw), self.val_y)


@dataclass
class IFTPieces:
    """The gradient graph and right-hand side every linear-solver peer starts from."""

    gradients: tuple[torch.Tensor, ...]
    rhs: Vector
    params: Vector
    hparams: Vector

    def matvec(self, vector: Sequence[torch.Tensor]) -> Vector:
        return list(
            torch.autograd.grad(self.gradients, self.params, list(vector), retain_graph=True)
        )

    def finish(self, solution: Sequence[torch.Tensor]) -> Vector:
        mixed = torch.autograd.grad(self.gradients, self.hparams, list(solution))
        return [-m for m in mixed]


def ift_pieces(problem: Losses) -> IFTPieces:
    params = problem.params
    gradients = torch.autograd.grad(problem.train_loss(), params, create_graph=True)
    rhs = list(torch.autograd.grad(problem.val_loss(), params))
    return IFTPieces(gradients, rhs, params, problem.hparams)


@dataclass
class CountingPieces:
    """``IFTPieces`` whose product is damped, (H + μI)v, and counted."""

    pieces: IFTPieces
    damping: float
    products: int = 0

    def matvec(self, vector: Sequence[torch.Tensor]) -> Vector:
        self.products += 1
        return add(self.pieces.matvec(vector), list(vector), alpha=self.damping)


# --------------------------------------------------------------------------------------------
# The adapters: fixed K (benchmarks.peers, and the loop's Neumann rows)
# --------------------------------------------------------------------------------------------


def torchopt_method(problem: Losses, kind: str, k: int, alpha: float) -> Method:
    from torchopt import linear_solve

    if kind == "cg":
        solve = linear_solve.solve_cg(maxiter=k, rtol=0.0, atol=0.0)
    else:
        solve = linear_solve.solve_inv(ns=True, maxiter=k, alpha=alpha)

    def run() -> Vector:
        pieces = ift_pieces(problem)
        return pieces.finish(solve(pieces.matvec, pieces.rhs))

    return run


def betty_method(problem: Losses, kind: str, k: int, alpha: float) -> Method:
    from betty import hypergradient as betty_hypergradient

    config = SimpleNamespace(
        neumann_iterations=k, neumann_alpha=alpha, cg_iterations=k, cg_alpha=1.0
    )
    lower = SimpleNamespace(
        paths=[],
        config=config,
        cur_batch=None,
        training_step_exec=lambda batch: problem.train_loss(),
        trainable_parameters=lambda: problem.params,
        parameters=lambda: problem.params,
    )
    upper = SimpleNamespace(trainable_parameters=lambda: problem.hparams)
    function = betty_hypergradient.neumann if kind == "neumann" else betty_hypergradient.cg

    def run() -> Vector:
        vector = list(torch.autograd.grad(problem.val_loss(), problem.params))
        return list(function(vector, lower, upper))

    return run


def curvlinops_operator() -> type:
    """curvlinops' ``PyTorchLinearOperator`` over a product ``matvec`` on the weights' shapes,
    built as ``HVPOperator(matvec, params)``."""
    from curvlinops._torch_base import PyTorchLinearOperator

    class HVPOperator(PyTorchLinearOperator):
        SELF_ADJOINT = True

        def __init__(self, matvec: Callable[[Vector], Vector], params: Vector) -> None:
            shapes = [tuple(p.shape) for p in params]
            super().__init__(shapes, shapes)
            self.product = matvec

        def _matmat(self, X: list[torch.Tensor]) -> list[torch.Tensor]:
            columns = [self.product([x[..., j] for x in X]) for j in range(X[0].shape[-1])]
            return [torch.stack(parts, dim=-1) for parts in zip(*columns, strict=True)]

    return HVPOperator


def curvlinops_method(problem: Losses, kind: str, k: int, alpha: float) -> Method:
    from curvlinops import CGInverseLinearOperator, NeumannInverseLinearOperator

    operator_type = curvlinops_operator()

    def run() -> Vector:
        pieces = ift_pieces(problem)
        operator = operator_type(pieces.matvec, pieces.params)
        if kind == "cg":
            inverse = CGInverseLinearOperator(
                operator, max_iter=k, max_tridiag_iter=k, tolerance=0.0
            )
        else:
            inverse = NeumannInverseLinearOperator(operator, num_terms=k, scale=alpha)
        return pieces.finish(inverse @ [r.detach() for r in pieces.rhs])

    return run


def higher_method(problem: Problem, k: int, alpha: float) -> Method:
    import higher

    def run() -> Vector:
        optimizer = torch.optim.SGD(problem.model.parameters(), lr=alpha)
        with higher.innerloop_ctx(problem.model, optimizer, copy_initial_weights=True) as (
            fmodel,
            diffopt,
        ):
            for _ in range(k):
                weights = list(fmodel.parameters())
                diffopt.step(problem.train_loss(fmodel, params=weights))
            val = problem.val_loss(fmodel, params=list(fmodel.parameters()))
            return list(torch.autograd.grad(val, problem.hparams))

    return run


# --------------------------------------------------------------------------------------------
# The adapters: CG on (H + μI)x = b to ‖r‖ ≤ tol·‖b‖, counting products
# (benchmarks.solvers_in_the_loop)
# --------------------------------------------------------------------------------------------

Counted = Callable[[Losses], tuple[Vector, int]]  # problem -> (hypergradient, products)


def torchopt_damped(solve: Callable[..., Vector], damping: float) -> Counted:
    """A torchopt ``linear_solve`` solver (``solve_cg``, ``solve_normal_cg``,
    ``solve_inv(ns=True)``) given the damped, counted product and ∂L_v/∂w."""

    def run(problem: Losses) -> tuple[Vector, int]:
        pieces = CountingPieces(ift_pieces(problem), damping)
        return pieces.pieces.finish(solve(pieces.matvec, pieces.pieces.rhs)), pieces.products

    return run


def torchopt_damped_cg(damping: float, max_iter: int, tol: float) -> Counted:
    from torchopt import linear_solve

    return torchopt_damped(linear_solve.solve_cg(maxiter=max_iter, rtol=tol, atol=0.0), damping)


def curvlinops_damped(inverse_type: Callable[..., Any], damping: float, **kwargs: Any) -> Counted:
    """``inverse_type(operator, **kwargs) @ b`` for a curvlinops inverse
    (``CGInverseLinearOperator``, ``NeumannInverseLinearOperator``) of the damped, counted
    product."""
    operator_type = curvlinops_operator()

    def run(problem: Losses) -> tuple[Vector, int]:
        pieces = CountingPieces(ift_pieces(problem), damping)
        inverse = inverse_type(operator_type(pieces.matvec, pieces.pieces.params), **kwargs)
        solution = inverse @ [r.detach() for r in pieces.pieces.rhs]
        return pieces.pieces.finish(solution), pieces.products

    return run


def curvlinops_damped_cg(damping: float, max_iter: int, tol: float) -> Counted:
    from curvlinops import CGInverseLinearOperator

    return curvlinops_damped(
        CGInverseLinearOperator,
        damping,
        max_iter=max_iter,
        max_tridiag_iter=max_iter,
        tolerance=tol,
    )


@dataclass
class DampedLosses:
    """``losses`` with (μ/2)‖w‖² added to the training loss: its Hessian is H + μI and its mixed
    derivative ∂²L_t/∂λ∂w is unchanged (for a peer that builds its products from the loss)."""

    losses: Losses
    damping: float

    @property
    def params(self) -> Vector:
        return self.losses.params

    @property
    def hparams(self) -> Vector:
        return self.losses.hparams

    def train_loss(self) -> torch.Tensor:
        squares = sum(p.square().sum() for p in self.params)
        return self.losses.train_loss() + 0.5 * self.damping * squares

    def val_loss(self) -> torch.Tensor:
        return self.losses.val_loss()


def betty_damped(kind: str, damping: float, iterations: int, alpha: float) -> Counted:
    """betty's ``neumann`` or ``cg`` with ``iterations`` products (``neumann_iterations``,
    ``cg_iterations``) on the damped losses; ``alpha`` is ``neumann_alpha`` (``cg_alpha`` is 1)."""

    def run(problem: Losses) -> tuple[Vector, int]:
        return betty_method(DampedLosses(problem, damping), kind, iterations, alpha)(), iterations

    return run
