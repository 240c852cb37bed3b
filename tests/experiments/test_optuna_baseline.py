"""The Optuna black-box baseline: the trial experiment (λ fixed), the sweeper presets, the equal
budget, Optuna minimising what ``hpo-run`` returns, and the comparison table of
``experiments/optuna_baseline.py`` (the last two in the slow group: they need the cluster extra
and run sweeps)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf

import hpo_cli
from experiments import optuna_baseline
from experiments.common import read_summary
from hpo_cli.runner.cli.command import train
from hpo_cli.runner.config.schemas import register_configs
from hpo_cli.runner.sweeps.aggregate import job_dirs
from tests.support.tiny_runs import DATA

CONF = Path(hpo_cli.__file__).parent / "conf"
HPO_RUN = str(Path(sys.executable).parent / "hpo-run")
CLUSTER_EXTRA = 'needs the cluster extra: pip install -e ".[cluster]" (make test-slow does)'


def config(*overrides: str, hydra: bool = False) -> DictConfig:
    register_configs()
    with initialize_config_module("hpo_cli.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def test_a_trial_trains_with_its_weight_decay_fixed(tmp_path):
    cfg = config(
        "experiment=optuna_baseline", "hyper.init=0.05", "outer_steps=3", "inner_steps=10", *DATA
    )
    train(cfg, tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert cfg.hyper.granularity == "scalar"
    for column in ("hyper_min", "hyper_max"):
        assert metrics[column].tolist() == pytest.approx([0.05] * 4, rel=1e-6)
    assert metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0]
    assert metrics["total_inner_steps"].iloc[-1] == 3 * 10


def test_a_search_has_the_inner_steps_of_one_gradient_based_run():
    default, trial = config(), config("experiment=optuna_baseline")
    presets = CONF / "hydra" / "sweeper"
    n_trials = OmegaConf.load(presets / "optuna_tpe.yaml").n_trials
    assert "optuna_tpe" in OmegaConf.load(presets / "optuna_random.yaml").defaults
    budget = default.outer_steps * default.inner_steps
    assert n_trials * trial.outer_steps * trial.inner_steps == budget == 10_000
    assert optuna_baseline.steps_overrides(
        optuna_baseline.methods(long=False)[2], default.outer_steps, default.inner_steps, n_trials
    ) == [f"outer_steps={trial.outer_steps}", f"inner_steps={trial.inner_steps}"]


def test_a_budget_that_does_not_split_into_trials_is_refused(capsys):
    with pytest.raises(SystemExit):
        optuna_baseline.main(["--trials", "3", "--outer-steps", "200", "--out", "unused"])
    assert "--trials 3 must divide --outer-steps 200" in capsys.readouterr().err


@pytest.mark.parametrize("preset, sampler", [("optuna_tpe", "TPE"), ("optuna_random", "Random")])
def test_the_sweeper_presets_search_decay_and_learning_rate(preset, sampler):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason=CLUSTER_EXTRA)
    cfg = config("experiment=optuna_baseline", f"hydra/sweeper={preset}", "seed=7", hydra=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper.sampler._target_ == f"optuna.samplers.{sampler}Sampler"
    assert sweeper.sampler.seed == 7 and sweeper.direction == "minimize"
    assert dict(sweeper.params) == {
        "hyper.init": "tag(log, interval(1.0e-6, 1.0))",
        "optimizer.lr": "tag(log, interval(1.0e-4, 1.0e-1))",
    }


def sampled(sweep_dir: Path, key: str) -> list[float]:
    return [
        float(next(o for o in read_summary(job)["overrides"] if o.startswith(key)).split("=")[1])
        for job in job_dirs(sweep_dir)
    ]


@pytest.mark.slow
def test_optuna_minimises_the_validation_loss_that_hpo_run_returns(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason=CLUSTER_EXTRA)
    command = [
        HPO_RUN, "-m", "experiment=optuna_baseline", "hydra/sweeper=optuna_tpe", "seed=0",
        "hydra.sweeper.n_trials=3", "outer_steps=2", "inner_steps=5", *DATA, "plots=false",
        "progress=false", f"hydra.sweep.dir={tmp_path}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    losses = [read_summary(job)["final"]["val_loss"] for job in job_dirs(tmp_path)]
    assert len(losses) == 3 and len(set(losses)) == 3
    best = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert best.best_value == pytest.approx(min(losses), rel=1e-9)
    assert all(1e-6 <= value <= 1.0 for value in sampled(tmp_path, "hyper.init="))
    assert all(1e-4 <= value <= 0.1 for value in sampled(tmp_path, "optimizer.lr="))
    table = pd.read_csv(tmp_path / "sweep.csv")
    assert table.groupby("job")["hyper_mean"].nunique().eq(1).all(), "λ moved during a trial"


@pytest.mark.slow
def test_the_baseline_table_compares_equal_budgets_from_files(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason=CLUSTER_EXTRA)
    arguments = ["--out", str(tmp_path), "--seeds", "0", "--trials", "2"]
    arguments += ["--outer-steps", "4", "--inner-steps", "5"]
    table = optuna_baseline.main(arguments).set_index("method")
    assert table.index.tolist() == [
        "gradient-based, per-weight decay",
        "gradient-based, scalar decay",
        "Optuna TPE",
        "Optuna random search",
    ]
    assert table["total_inner_steps"].tolist() == [20] * 4
    assert table["hyper_steps"].tolist() == [4, 4, 0, 0]
    assert table["trials"].tolist() == [1, 1, 2, 2]
    for folder, method in (("optuna_tpe", "Optuna TPE"), ("ift_scalar", table.index[1])):
        runs = job_dirs(tmp_path / folder / "seed_0") or [tmp_path / folder / "seed_0"]
        losses = [read_summary(run)["final"]["val_loss"] for run in runs]
        assert table.loc[method, "val_loss"] == min(losses)
    markdown = (tmp_path / "optuna_baseline.md").read_text()
    assert markdown.count("\n") == 6 and "| Optuna TPE | 20 (2 trials) |" in markdown

    def no_runs(*args, **kwargs):
        raise AssertionError("a completed run or search was re-run")

    monkeypatch.setattr(optuna_baseline.subprocess, "run", no_runs)
    again = optuna_baseline.main(arguments).set_index("method")
    pd.testing.assert_frame_equal(again, table)
