"""``hpo-hessian curvature=ggn`` analyses exactly the matrix that ``solver.curvature=ggn`` inverts.

Both take the training loss, its outputs and the penalty from the hyperparameter module
(:func:`hpo_cli.hyper.training_terms`) and the product from
:func:`hpo_cli.core.curvature.curvature_product`. For a module whose training loss is not the mean
criterion plus the penalty (weighted examples, augmented inputs), the Gauss-Newton matrix of the
plain criterion of the raw outputs is another matrix: the check below tells the two apart.
"""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_module

from hpo_cli.analysis.hessian import ggn_operator
from hpo_cli.analysis.hessian.operators import SymmetricOperator
from hpo_cli.core.hvp import dense_matrix
from hpo_cli.hpo_hessian.cli import curvature_operator
from hpo_cli.runner.config.build import Problem, build_experiment, build_problem
from hpo_cli.runner.loop.hyper_losses import hyper_losses
from tests.support.composed import run_config

# A tiny float64 problem: 12 digits, a 64-3-10 MLP (235 weights), every weight analysed.
PROBLEM = [
    "dtype=float64",
    "seed=3",
    "dataset.train_size=12",
    "dataset.val_size=12",
    "dataset.test_size=12",
    "model.hidden_sizes=[3]",
]
HYPER = {
    "weight_decay": ["hyper=weight_decay"],
    "loss_weights": ["hyper=loss_weights"],
    "augment_net": ["hyper=augment_net", "hyper.width=3"],
}


def hessian_config(*overrides: str):
    with initialize_config_module("hpo_cli.conf", version_base="1.3"):
        return compose("hessian", [*overrides, "train_steps=0"])


def dense(operator: SymmetricOperator) -> torch.Tensor:
    return dense_matrix(operator.matvec, operator.like)


def criterion_plus_penalty(problem: Problem, params: list[torch.Tensor]) -> SymmetricOperator:
    """The construction hpo-hessian used before: the criterion of the model's outputs on the raw
    training inputs, unweighted, plus the penalty (right for weight decay only)."""
    train = problem.data.train
    outputs = problem.model(train.inputs)
    loss = problem.criterion(outputs, train.targets).mean()
    return ggn_operator(outputs, loss, params, problem.hyper.penalty(problem.model))


@pytest.mark.parametrize("hyper", list(HYPER))
def test_hpo_hessian_analyses_the_gauss_newton_matrix_the_runner_inverts(hyper):
    overrides = [*PROBLEM, *HYPER[hyper]]
    exp = build_experiment(
        run_config(*overrides, "batch_size=4", "solver=cg", "solver.curvature=ggn")
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # λ away from its neutral start (uniform weights, near-identity net)
        for param in exp.hyper.parameters():
            param.add_(torch.randn(param.shape, generator=generator, dtype=param.dtype))
    params = list(exp.model.parameters())
    whole = exp.data.train.sample(None, exp.batches)
    losses = hyper_losses(exp, whole, exp.data.val.sample(None, exp.batches))
    _, matvec = exp.joint.method.curvature_of(exp.model, losses)  # what the runner's solver inverts
    assert matvec is not None
    runner = dense_matrix(matvec, params)

    # hpo-hessian's problem, built from its own configuration, at the experiment's w and λ.
    problem = build_problem(hessian_config(*overrides, "curvature=ggn"))
    problem.model.load_state_dict(exp.model.state_dict())
    problem.hyper.load_state_dict(exp.hyper.state_dict())
    analysed = dense(curvature_operator(problem, list(problem.model.parameters()), "ggn"))

    assert runner.dtype == analysed.dtype == torch.float64 and runner.shape == (235, 235)
    scale = float(runner.abs().max())
    assert scale > 1e-3
    assert float((analysed - runner).abs().max()) <= 1e-10 * scale
    old = dense(criterion_plus_penalty(problem, list(problem.model.parameters())))
    gap = float((old - runner).abs().max()) / scale
    if hyper == "weight_decay":
        assert gap <= 1e-10  # mean criterion + penalty is weight decay's training loss
    else:
        assert gap > 1e-3, f"{hyper}: the plain criterion's GGN is not the runner's ({gap:.2e})"
