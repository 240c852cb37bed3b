"""``solver.products`` end to end through ``hpo-run``: a user's model with a layer autograd cannot
differentiate twice (tests/support/no_double_backward.py) stops in one line naming the option
with the default products, and trains with ``finite_difference``; on the default MLP the two
products give the same hypergradient (float64)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.support.cli_runs import Result, hpo_run
from tests.support.tiny_runs import DATA, QUIET, tiny

ONCE = [
    "~model",
    "+model._target_=tests.support.no_double_backward.OnceTanhNet",
    *DATA,
    "outer_steps=2",
    "inner_steps=3",
    "eval_every=1",
    "warmup_inner_steps=20",
    *QUIET,
]
"""A tiny run of the model without double backward (its own sizes, no model.hidden_sizes)."""


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("hpo-run: error:")]


def test_a_model_without_double_backward_stops_in_one_line_naming_finite_differences(tmp_path):
    result = hpo_run(tmp_path, *ONCE)
    (line,) = error_lines(result)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "@once_differentiable" in line and "set solver.products=finite_difference" in line
    assert len(pd.read_csv(tmp_path / "metrics.csv")) == 1, "the first evaluation is kept"
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"


def test_a_model_without_double_backward_trains_with_finite_difference_products(tmp_path):
    result = hpo_run(tmp_path, *ONCE, "solver.products=finite_difference")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert len(table) == 3
    assert table["hypergrad_norm"].iloc[1:].gt(0).all()
    assert table["hyper_mean"].iloc[-1] != table["hyper_mean"].iloc[0]  # λ moved


def test_diagnostics_that_differentiate_twice_stop_in_one_line_naming_themselves(tmp_path):
    result = hpo_run(tmp_path, *ONCE, "solver.products=finite_difference", "hessian_every=1")
    (line,) = error_lines(result)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "@once_differentiable" in line and "hessian_every" in line


def test_both_products_give_the_default_experiments_hypergradient(tmp_path):
    """The same tiny run (float64) with either products: the first hyper-step's ‖dL_v/dλ‖ agrees
    to the finite differences' error (≈ 1e-10 measured)."""
    norms = []
    for products in ("autograd", "finite_difference"):
        run_dir = tmp_path / products
        changes = ("outer_steps=1", "dtype=float64", f"solver.products={products}")
        assert hpo_run(run_dir, *tiny(*changes)).returncode == 0
        norms.append(pd.read_csv(run_dir / "metrics.csv")["hypergrad_norm"].iloc[1])
    assert norms[1] == pytest.approx(norms[0], rel=1e-7)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("solver.products=forward", "error: solver.products='forward' is unknown"),
        ("solver.curvature=ggn", "with curvature='ggn' use products='autograd'"),
    ],
)
def test_unknown_products_and_gauss_newton_differences_are_refused_in_one_line(
    tmp_path, override, needle
):
    changes = [override]
    if "curvature" in override:
        changes.append("solver.products=finite_difference")
    result = hpo_run(tmp_path / "run", *tiny(*changes))
    (line,) = error_lines(result)
    assert result.returncode == 2 and needle in line, result.stderr
    assert not (tmp_path / "run").exists()
