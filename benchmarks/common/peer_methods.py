"""The two problems of ``benchmarks.peers`` (ridge regression with its closed form, the
pretrained MLP) and every method it times at K: hpo-cli's CG, Neumann and unrolled SGD, the floor
(K HVPs, no solver) and each available peer's adapter (``benchmarks.common.peer_adapters``).

:func:`methods` is the one list of methods; each returns dL_v/dλ as a list shaped like the
hyperparameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from benchmarks.common.harness import Sizes, log
from benchmarks.common.peer_adapters import (
    Method,
    Problem,
    Vector,
    betty_method,
    curvlinops_method,
    higher_method,
    ift_pieces,
    torchopt_method,
)
from benchmarks.common.problems import make_mlp_problem, make_ridge, pretrain
from hpo_cli import ConjugateGradient, Neumann, hypergradient
from hpo_cli.core.unrolled import SGDUpdate, unrolled_hypergradient

# --------------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------------


class RidgeModel(nn.Module):
    """x ↦ x w with w a parameter: the ridge regression's weights as a module (for higher)."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weights.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (outputs - targets).square().mean()


def ridge_problem(sizes: Sizes, device: torch.device) -> Problem:
    ridge = make_ridge(sizes, device)
    return Problem(
        name="ridge",
        model=RidgeModel(ridge.weights),
        hparams=[ridge.theta],
        train_x=ridge.x_train,
        train_y=ridge.y_train,
        val_x=ridge.x_val,
        val_y=ridge.y_val,
        data_loss=mse,
        penalty=lambda w, t: (t[0].exp() * w[0].square()).sum(),
        reference=[ridge.reference()],
    )


def mlp_problem(sizes: Sizes, device: torch.device) -> Problem:
    mlp = make_mlp_problem(sizes, "relu", device)
    log(f"peers: pretraining the MLP ({sizes.pretrain_steps} Adam steps)")
    pretrain(mlp, sizes.pretrain_steps)

    def penalty(weights: Sequence[torch.Tensor], hparams: Sequence[torch.Tensor]) -> torch.Tensor:
        return sum(
            (nn.functional.softplus(t) * w.square()).sum()
            for t, w in zip(hparams, weights, strict=True)
        )

    return Problem(
        name="mlp",
        model=mlp.model,
        hparams=mlp.hparams,
        train_x=mlp.train.x,
        train_y=mlp.train.y,
        val_x=mlp.val.x,
        val_y=mlp.val.y,
        data_loss=nn.functional.cross_entropy,
        penalty=penalty,
    )


# --------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------


class HpoCliMethod:
    """hpo-cli's ``hypergradient``; keeps the last call's solver status and HVP count."""

    def __init__(self, problem: Problem, solver: Any) -> None:
        self.problem, self.solver = problem, solver
        self.info: dict[str, Any] = {}

    def __call__(self) -> Vector:
        problem = self.problem
        result = hypergradient(
            problem.train_loss(),
            problem.val_loss(),
            problem.params,
            problem.hparams,
            self.solver,
            check_residual=False,
            raise_on_failure=False,
        )
        self.info = {"status": result.solve.status, "hvps": result.hvps}
        return list(result.grads)


def unrolled_method(problem: Problem, k: int, alpha: float) -> Method:
    update = SGDUpdate(alpha)

    def run() -> Vector:
        grads, _ = unrolled_hypergradient(
            problem.model,
            problem.hparams,
            update,
            update.init_state(problem.params),
            lambda _step: problem.train_loss(),
            problem.val_loss,
            k,
        )
        return list(grads)

    return run


FLOOR = "floor: K HVPs, no solver"


def floor_method(problem: Problem, k: int) -> Method:
    """The work every IFT method here shares, and nothing else: the gradient graph, ∂L_v/∂w,
    K autograd HVPs in sequence and the mixed product. No solver spends less on these HVPs; its
    result is not a hypergradient (no error is reported)."""

    def run() -> Vector:
        pieces = ift_pieces(problem)
        vector = pieces.rhs
        for _ in range(k):
            vector = pieces.matvec(vector)
        return pieces.finish(vector)

    return run


def methods(problem: Problem, k: int, alpha: float, status: dict[str, str]) -> dict[str, Method]:
    """Every available method at K, keyed by "library: method", and the floor."""
    table: dict[str, Method] = {
        "hpo-cli: cg": HpoCliMethod(
            problem, ConjugateGradient(max_iter=k, tol=0.0, warm_start=False)
        ),
        "hpo-cli: neumann": HpoCliMethod(problem, Neumann(k + 1, alpha=alpha)),
        "hpo-cli: unrolled SGD": unrolled_method(problem, k, alpha),
        FLOOR: floor_method(problem, k),
    }
    available = {name for name, value in status.items() if not value.startswith("not avail")}
    if "torchopt" in available:
        table["torchopt: solve_cg"] = torchopt_method(problem, "cg", k, alpha)
        table["torchopt: solve_inv(ns=True)"] = torchopt_method(problem, "neumann", k, alpha)
    if "betty" in available:
        table["betty: cg"] = betty_method(problem, "cg", k, alpha)
        table["betty: neumann"] = betty_method(problem, "neumann", k, alpha)
    if "curvlinops" in available:
        table["curvlinops: CGInverseLinearOperator"] = curvlinops_method(problem, "cg", k, alpha)
        table["curvlinops: NeumannInverseLinearOperator"] = curvlinops_method(
            problem, "neumann", k, alpha
        )
    if "higher" in available:
        table["higher: unrolled SGD"] = higher_method(problem, k, alpha)
    return table
