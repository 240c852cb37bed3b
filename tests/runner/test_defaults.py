"""One source of truth for defaults: a group option's YAML agrees with its constructor's defaults,
except for the deliberate differences listed here, each commented in its YAML file.

A constructor default or a YAML value that changes without this list changing fails the test, so
a library user (``Neumann()``) and a command-line user (``solver=neumann``) get the same solver
unless someone decided otherwise and said why.
"""

from __future__ import annotations

import inspect

from hydra.utils import get_method
from omegaconf import OmegaConf

from hpo_cli.core.methods import ImplicitDifferentiation
from hpo_cli.runner.config.schemas import METHOD_OPTIONS
from tests.support.option_configs import CONF, option_node, options

GROUPS = ("dataset", "model", "hyper", "solver", "optimizer", "hyper_optimizer")

# (group, option, key, YAML value, constructor default)
DELIBERATE = [
    ("hyper", "weight_decay", "granularity", "scalar", "weight"),
    ("hyper", "weight_decay_per_layer", "granularity", "layer", "weight"),
    ("hyper_optimizer", "adam", "lr", 0.01, 0.001),
    ("hyper_optimizer", "rmsprop", "lr", 0.1, 0.01),
    ("hyper_optimizer", "sgd", "lr", 0.1, 0.001),
    ("model", "mlp", "hidden_sizes", [64], None),
    ("optimizer", "hessian_free", "cg_max_iter", 50, 250),
    ("optimizer", "rmsprop", "lr", 0.001, 0.01),
    ("optimizer", "sgd", "lr", 0.01, 0.001),
    ("optimizer", "sgd", "momentum", 0.9, 0),
    ("solver", "cg", "damping", 0.1, 0.0),
]


def differences() -> list[tuple[str, str, str, object, object]]:
    """Every (group, option, key, composed value, constructor default) that disagree."""
    found = []
    for group in GROUPS:
        for name in options(group):
            node = OmegaConf.to_container(option_node(group, name))
            parameters = inspect.signature(get_method(node.pop("_target_"))).parameters
            if group == "solver":  # the implicit method's keys (the runner's), not the solver's
                for key in METHOD_OPTIONS:
                    node.pop(key, None)
            for key, value in node.items():
                assert key in parameters, f"{group}/{name}.yaml: {key} is no argument"
                default = parameters[key].default
                default = list(default) if isinstance(default, tuple) else default
                if value != default:
                    found.append((group, name, key, value, default))
    return found


def test_yaml_values_equal_constructor_defaults_except_the_deliberate_ones():
    assert sorted(differences(), key=str) == sorted(DELIBERATE, key=str)


CURVATURE_CHOICES = {"cg": "ggn"}
"""The solver options whose ``curvature`` is not ImplicitDifferentiation's default (hessian)."""


def test_a_solver_yaml_chooses_its_curvature_only_where_listed():
    default = inspect.signature(ImplicitDifferentiation).parameters["curvature"].default
    chosen = {}
    for name in options("solver"):
        curvature = option_node("solver", name).get("curvature", default)
        if curvature != default:
            chosen[name] = curvature
    assert chosen == CURVATURE_CHOICES


def test_every_deliberate_difference_is_commented_in_its_yaml():
    solvers = [("solver", name, "curvature", None, None) for name in CURVATURE_CHOICES]
    for group, option, key, _, _ in [*DELIBERATE, *solvers]:
        lines = (CONF / group / f"{option}.yaml").read_text().splitlines()
        (line,) = [line for line in lines if line.startswith(f"{key}:")]
        assert "#" in line, f"{group}/{option}.yaml: say why {key} differs from its constructor"
