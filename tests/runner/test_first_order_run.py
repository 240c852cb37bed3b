"""``solver=first_order`` end to end through ``hpo-run``: a tiny run trains λ with no
Hessian-vector product, a model without double backward trains with it as it is, and an inner
optimiser whose preconditioner it cannot read is refused in one line before anything runs."""

from __future__ import annotations

import pandas as pd
import pytest

from hpo_cli.runner.cli.command import train
from hpo_cli.runner.errors import ConfigError
from tests.runner.test_products import ONCE, error_lines
from tests.support.cli_runs import hpo_run
from tests.support.composed import run_config
from tests.support.tiny_runs import tiny


def test_a_tiny_run_trains_lambda_without_hessian_products(tmp_path):
    result = hpo_run(tmp_path, *tiny("solver=first_order"))
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "metrics.csv")
    hyper_rows = table.iloc[1:]
    assert hyper_rows["hypergrad_norm"].gt(0).all()
    assert hyper_rows["solver_hvps"].eq(0).all()
    assert set(hyper_rows["solver_status"]) == {"approximation"}
    assert table["hyper_mean"].iloc[-1] != table["hyper_mean"].iloc[0]  # λ moved


def test_a_model_without_double_backward_trains_with_the_first_order_solver(tmp_path):
    result = hpo_run(tmp_path, *ONCE, "solver=first_order")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert table["hypergrad_norm"].iloc[1:].gt(0).all()
    assert table["hyper_mean"].iloc[-1] != table["hyper_mean"].iloc[0]


def test_an_inner_optimizer_it_cannot_read_is_refused_in_one_line(tmp_path):
    result = hpo_run(tmp_path / "run", *tiny("solver=first_order", "optimizer=hessian_free"))
    (line,) = error_lines(result)
    assert result.returncode == 2, result.stderr
    assert "solver=first_order: " in line and "not of HessianFree" in line
    assert not (tmp_path / "run").exists()


def comparison(*overrides: str):
    return run_config(
        "experiment=inverse_comparison",
        "plots=false",
        "outer_steps=2",
        "solver_comparison.every=1",
        "solver_comparison.budget=1",
        "solver_comparison.solvers=[identity,first_order]",
        *overrides,
    )


def test_the_solver_comparison_has_a_first_order_row_that_is_eta_times_the_identitys(tmp_path):
    """Ridge regression with SGD inside and λ only in L_t: P = η I makes the first-order
    hypergradient η times the identity solver's, so their cosines with the dense solve agree
    (to the central difference's error, float64) at no products."""
    train(comparison(), tmp_path)
    table = pd.read_csv(tmp_path / "solver_comparison.csv")
    dense = table[table["reference"] == "dense"].set_index(["outer_step", "solver"])
    for step in (1, 2):
        first_order, identity = dense.loc[(step, "first_order")], dense.loc[(step, "identity")]
        assert first_order["hvps"] == 0 and first_order["status"] == "approximation"
        assert first_order["cosine"] == pytest.approx(identity["cosine"], abs=1e-8)
        assert abs(first_order["rel_error"] - identity["rel_error"]) > 1e-3  # another scale


def test_a_first_order_comparison_with_an_optimizer_it_cannot_read_is_refused(tmp_path):
    changes = ("optimizer=hessian_free", "solver_comparison.every=1")
    cfg = run_config(*tiny(*changes, "solver_comparison.solvers=[first_order]"))
    with pytest.raises(ConfigError, match=r"solver_comparison \(first_order\): .*HessianFree"):
        train(cfg, tmp_path)
