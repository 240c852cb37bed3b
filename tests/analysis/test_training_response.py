"""The solver comparison's references beyond the dense solve: the unrolled hypergradient through
the run's own optimiser over a horizon, validated by central differences of the real training,
and the correlation of every solver's predictions with those differences."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from hpo_cli.analysis.training_response import agreement, correlation, random_directions
from hpo_cli.core.unrolled import unroll
from hpo_cli.runner.cli.command import train
from hpo_cli.runner.config.build import build_experiment
from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.loop.horizons import Horizon
from hpo_cli.runner.loop.train import inner_step
from hpo_cli.runner.rundir.metrics import SOLVER_COMPARISON_COLUMNS
from tests.support.composed import run_config

SOLVERS = "solver_comparison.solvers=[identity,neumann,cg,ggn_cg,unrolled]"


def config(*overrides: str):
    return run_config(
        "experiment=inverse_comparison",
        "plots=false",
        "outer_steps=2",
        "inner_steps=4",
        "warmup_inner_steps=20",
        "batch_size=50",  # mini-batches: the generator is in use
        *overrides,
    )


def test_horizon_references_validate_and_leave_the_run_unchanged(tmp_path):
    on = [
        "solver_comparison.every=1",
        "solver_comparison.budget=2",
        SOLVERS,
        "solver_comparison.horizons=[1,2]",
        "solver_comparison.directions=3",
    ]
    for name, extra in (("off", ["solver_comparison.every=null"]), ("on", on)):
        (tmp_path / name).mkdir()
        train(config(*extra), tmp_path / name)
    runs = [pd.read_csv(tmp_path / name / "metrics.csv") for name in ("off", "on")]
    columns = [c for c in runs[0].columns if c != "wall_time_s"]
    pd.testing.assert_frame_equal(runs[0][columns], runs[1][columns])

    table = pd.read_csv(tmp_path / "on" / "solver_comparison.csv")
    assert table.columns.tolist() == SOLVER_COMPARISON_COLUMNS
    references = table[table["solver"] == "reference"]
    assert sorted(set(references["horizon"])) == [4, 8]  # phases × inner_steps
    # The unrolled reference predicts the real training's finite differences (float64).
    assert references["rel_error"].max() < 1e-5
    assert references["fd_correlation"].min() > 0.9999
    # A linear model's Gauss-Newton matrix is its Hessian: ggn_cg is cg.
    dense = table[table["reference"] == "dense"].set_index(["outer_step", "solver", "k"])
    pd.testing.assert_series_equal(
        dense.xs("ggn_cg", level="solver")["cosine"],
        dense.xs("cg", level="solver")["cosine"],
        rtol=1e-9,
    )
    assert set(dense.xs("unrolled", level="solver").index.get_level_values("k")) == {1, 2}
    against = table[(table["reference"] == "unrolled") & (table["solver"] != "reference")]
    assert against["fd_correlation"].notna().sum() > 0
    assert (against["fd_correlation"].dropna().abs() <= 1 + 1e-12).all()


def test_an_optimizer_it_cannot_unroll_refuses_horizons_before_training(tmp_path):
    overrides = ["solver_comparison.every=1", "solver_comparison.horizons=[1]"]
    cfg = run_config(*overrides, "optimizer=hessian_free", "model.hidden_sizes=[4]")
    with pytest.raises(ConfigError, match="solver_comparison \\(horizons, unrolled\\)"):
        train(cfg, tmp_path)


def test_correlation_and_agreement():
    a = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert correlation(a, 2 * a + 1) == pytest.approx(1.0)
    assert correlation(a, -a) == pytest.approx(-1.0)
    assert math.isnan(correlation(a, torch.ones(3, dtype=torch.float64)))
    assert agreement(a, a) == (pytest.approx(1.0), 0.0)
    assert all(math.isnan(x) for x in agreement(None, a))
    directions = random_directions([torch.zeros(2, 3), torch.zeros(4)], 5, seed=0)
    assert directions.shape == (5, 10)
    torch.testing.assert_close(directions.norm(dim=1), torch.ones(5))


def test_the_horizon_is_the_runs_own_next_steps():
    """Unrolled without a graph, the horizon's steps land exactly where the run's next inner
    steps do (same batches, same optimiser state, same arithmetic)."""
    overrides = ["dtype=float64", "model.hidden_sizes=[4]", "batch_size=8", "hyper_steps=false"]
    cfg = run_config("optimizer=sgd", "optimizer.nesterov=true", *overrides)
    exp = build_experiment(cfg)
    for _ in range(3):
        inner_step(exp)
    horizon = Horizon(exp, 4, exp.data.val.head(10))
    predicted, _ = unroll(
        exp.model, horizon.update, horizon.state, horizon.training_loss, 4, create_graph=False
    )
    for _ in range(4):
        inner_step(exp)
    for mine, real in zip(predicted, exp.model.parameters(), strict=True):
        torch.testing.assert_close(mine.detach(), real.detach(), rtol=1e-12, atol=1e-12)
