"""``solver=first_order`` end to end through ``hpo-run``: a tiny run trains λ with no
Hessian-vector product, a model without double backward trains with it as it is, and an inner
optimiser whose preconditioner it cannot read is refused in one line before anything runs."""

from __future__ import annotations

import pandas as pd

from tests.runner.test_products import ONCE, error_lines
from tests.support.cli_runs import hpo_run
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
