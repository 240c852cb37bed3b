"""hpo-cli: gradient-based hyperparameter optimisation by implicit differentiation.

The library core needs no Hydra, files or plots::

    from hpo_cli import hypergradient, Neumann

    result = hypergradient(train_loss, val_loss, list(model.parameters()),
                           list(hyper.parameters()), Neumann(terms=10), write_grad=True)
    hyper_optimizer.step()

See :mod:`hpo_cli.core.hypergradient` for the maths and the sign convention.
"""

from hpo_cli.core.constraints import CONSTRAINTS, Constraint, constrained_parameter, constraint
from hpo_cli.core.hvp import GaussNewtonCurvature, TrainingCurvature, damped, dense_matrix
from hpo_cli.core.hypergradient import Hypergradient, HypergradientError, hypergradient
from hpo_cli.core.joint import JointOptimizer
from hpo_cli.core.methods import (
    HypergradientMethod,
    HyperLosses,
    ImplicitDifferentiation,
)
from hpo_cli.core.solvers import (
    ConjugateGradient,
    Exact,
    Identity,
    InverseHVPSolver,
    Neumann,
    SingularSystemError,
    SolveInfo,
    Status,
)

__all__ = [
    "CONSTRAINTS",
    "ConjugateGradient",
    "Constraint",
    "Exact",
    "GaussNewtonCurvature",
    "HyperLosses",
    "Hypergradient",
    "HypergradientError",
    "HypergradientMethod",
    "Identity",
    "ImplicitDifferentiation",
    "InverseHVPSolver",
    "JointOptimizer",
    "Neumann",
    "SingularSystemError",
    "SolveInfo",
    "Status",
    "TrainingCurvature",
    "constrained_parameter",
    "constraint",
    "damped",
    "dense_matrix",
    "hypergradient",
]
