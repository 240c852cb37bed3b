"""hpo-cli: gradient-based hyperparameter optimisation by implicit differentiation.

The library core needs no Hydra, files or plots::

    from hpo_cli import hypergradient, Neumann

    result = hypergradient(train_loss, val_loss, list(model.parameters()),
                           list(hyper.parameters()), Neumann(terms=10), write_grad=True)
    hyper_optimizer.step()

See :mod:`hpo_cli.core.hypergradient` for the maths and the sign convention.

An ``hpo-run`` run's model and λ, back for evaluation or fine-tuning (:func:`load_run`)::

    run = hpo_cli.load_run("outputs/runs/<date>/<time>", which="last")
    run.model.eval(); predictions = run.model(run.data.test.inputs).argmax(-1)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_cli.lazy import lazy_exports

if TYPE_CHECKING:
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
    from hpo_cli.runner.results import LoadedRun

_EXPORTS = {
    "hpo_cli.core.constraints": (
        "CONSTRAINTS",
        "Constraint",
        "constrained_parameter",
        "constraint",
    ),
    "hpo_cli.core.hvp": ("GaussNewtonCurvature", "TrainingCurvature", "damped", "dense_matrix"),
    "hpo_cli.core.hypergradient": ("Hypergradient", "HypergradientError", "hypergradient"),
    "hpo_cli.core.joint": ("JointOptimizer",),
    "hpo_cli.core.methods": ("HypergradientMethod", "HyperLosses", "ImplicitDifferentiation"),
    "hpo_cli.core.solvers": (
        "ConjugateGradient",
        "Exact",
        "Identity",
        "InverseHVPSolver",
        "Neumann",
        "SingularSystemError",
        "SolveInfo",
        "Status",
    ),
}
"""Module → the names ``hpo_cli`` re-exports from it, imported on first use
(:mod:`hpo_cli.lazy`): ``import hpo_cli`` imports no torch until a name is used."""
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


def load_run(run_dir: str | Path, which: str = "best", **options: Any) -> LoadedRun:
    """An ``hpo-run`` run's model, λ, data, configuration and progress from its best or last
    checkpoint (:func:`hpo_cli.runner.results.load_run`, which documents the arguments). The
    runner, and with it Hydra, is imported on the first call only."""
    from hpo_cli.runner.results import load_run as load

    return load(run_dir, which, **options)  # type: ignore[arg-type]


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
    "load_run",
]
