"""The inner/outer loop in-process: determinism, the hyper-step's effect, loop options."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from hpo_cli.core.hvp import TrainingCurvature, dense_matrix
from hpo_cli.runner.cli.command import train
from hpo_cli.runner.config.build import build_experiment
from hpo_cli.runner.loop.diagnostics import untouched_run
from hpo_cli.runner.loop.experiment import Experiment
from hpo_cli.runner.loop.progress import Progress, RunFailed
from hpo_cli.runner.loop.train import evaluate_split, hyper_step, inner_step
from hpo_cli.runner.rundir.checkpoint import read_checkpoint
from tests.support.composed import run_config
from tests.support.tiny_runs import tiny

TINY = tiny("outer_steps=3", "warmup_inner_steps=100")


def config(*overrides: str):
    return run_config(*TINY, *overrides)


def test_same_config_and_seed_give_the_same_metrics(tmp_path):
    tables = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        train(config("seed=5"), tmp_path / name)
        tables.append(pd.read_csv(tmp_path / name / "metrics.csv").drop(columns="wall_time_s"))
    pd.testing.assert_frame_equal(*tables)


def test_different_seeds_give_different_runs(tmp_path):
    finals = []
    for seed in (0, 1):
        (tmp_path / str(seed)).mkdir()
        train(config(f"seed={seed}"), tmp_path / str(seed))
        finals.append(pd.read_csv(tmp_path / str(seed) / "metrics.csv")["val_loss"].iloc[-1])
    assert finals[0] != finals[1]


def test_a_hyper_step_lowers_the_validation_loss_to_first_order():
    """With the exact solver near a minimum, a small step along −dL_v/dλ (then re-training the
    weights) lowers L_v, below the same re-training without the step (the control: two
    experiments of one seed train identically): the sign convention reaches the optimiser
    intact."""
    cfg = config(
        "solver=exact",
        "hyper=weight_decay",
        "hyper_optimizer=sgd",
        "hyper_optimizer.lr=1.0",
        "dtype=float64",
        "warmup_inner_steps=0",
        "optimizer=sgd",
        "optimizer.lr=0.5",
        "optimizer.momentum=0",
        "hyper.init=0.05",
        "batch_size=20",
    )
    stepped, control = build_experiment(cfg), build_experiment(cfg)

    def retrain_and_validate(exp: Experiment) -> float:
        for _ in range(500):  # L_v settles within ±0.01; the step lowers it by about 0.1
            inner_step(exp)
        with torch.no_grad():
            batch = exp.data.val.sample(None, exp.batches)
            return float(exp.hyper.validation_loss(exp.model, batch, exp.criterion))

    before = retrain_and_validate(stepped)
    assert retrain_and_validate(control) == before
    progress = Progress()
    hyper_step(stepped, progress)
    assert progress.last_hyper["solver_status"] == "converged"
    after = retrain_and_validate(stepped)
    assert after < before and after < retrain_and_validate(control)


def test_reset_inner_optimizer_starts_each_outer_step_fresh(tmp_path):
    cfg = config("reset_inner_optimizer=true", "outer_steps=2")
    progress = train(cfg, tmp_path)
    assert progress.outer_step == 2 and progress.total_inner_steps == 100 + 2 * 5


def test_evaluation_every_k_steps_and_at_the_end(tmp_path):
    train(config("outer_steps=7", "eval_every=3"), tmp_path)
    assert pd.read_csv(tmp_path / "metrics.csv")["outer_step"].tolist() == [0, 3, 6, 7]


@pytest.mark.parametrize("solver", ["identity", "neumann", "cg", "exact", "unrolled"])
def test_every_solver_trains(tmp_path, solver):
    progress = train(config(f"solver={solver}"), tmp_path)
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert progress.outer_step == 3
    assert table["hypergrad_norm"].iloc[1:].gt(0).all()
    assert not table["solver_diverged"].iloc[1:].any()


def test_the_krylov_series_runs_the_same_training(tmp_path):
    """solver.krylov_series=true (the series summed in the estimate's Krylov space) through the
    runner: 3 fewer products per hyper-step, the same run up to float32 rounding."""
    for name, overrides in [("products", []), ("krylov", ["solver.krylov_series=true"])]:
        (tmp_path / name).mkdir()
        train(config("solver=neumann", *overrides), tmp_path / name)
    products, krylov = (
        pd.read_csv(tmp_path / name / "metrics.csv") for name in ("products", "krylov")
    )
    assert (products["solver_hvps"].iloc[1:] - krylov["solver_hvps"].iloc[1:]).eq(3).all()
    for column in ("val_loss", "hypergrad_norm", "hyper_mean"):
        assert krylov[column].to_numpy() == pytest.approx(
            products[column].to_numpy(), rel=1e-5, nan_ok=True
        )


def test_evaluation_uses_eval_mode_and_restores_training_mode():
    """Batch norm's running statistics must not move during evaluation."""
    small = [o for o in TINY if not o.startswith("model.")]
    cfg = run_config(*small, "model=resnet18")
    exp = build_experiment(cfg)
    running = [b.clone() for b in exp.model.buffers() if b.dtype.is_floating_point]
    evaluate_split(exp, exp.data.test)
    after = [b for b in exp.model.buffers() if b.dtype.is_floating_point]
    assert all(torch.equal(x, y) for x, y in zip(running, after, strict=True))
    assert exp.model.training


def test_hessian_diagnostics_match_the_dense_hessian(tmp_path):
    cfg = config("hessian_every=1", "hessian_probes=200", "dtype=float64", "outer_steps=2")
    train(cfg, tmp_path)
    last = pd.read_csv(tmp_path / "metrics.csv").iloc[-1]

    exp = build_experiment(cfg)  # the same weights again, from the final checkpoint
    state = read_checkpoint(tmp_path / "checkpoint.pt")
    exp.model.load_state_dict(state["model"])
    exp.hyper.load_state_dict(state["hyper"])
    params = list(exp.model.parameters())
    loss = exp.hyper.training_loss(exp.model, exp.data.train.head(None), exp.criterion)
    eigenvalues = torch.linalg.eigvalsh(dense_matrix(TrainingCurvature(loss, params).hvp, params))

    assert last["hessian_lambda_max"] == pytest.approx(float(eigenvalues[-1]), rel=1e-2)
    assert float(eigenvalues[0]) - 1e-9 <= last["hessian_lambda_min"] <= float(eigenvalues[-1])
    assert last["hessian_lambda_min"] < 0.5 * float(eigenvalues[-1])
    exact_trace = float(eigenvalues.sum())
    assert abs(last["hessian_trace"] - exact_trace) <= 4 * last["hessian_trace_std_error"]


def test_hessian_diagnostics_leave_the_trajectory_unchanged(tmp_path):
    tables = []
    for name, extra in (("off", []), ("on", ["hessian_every=1", "hyper=dropout"])):
        (tmp_path / name).mkdir()
        overrides = extra if name == "on" else ["hyper=dropout"]
        train(config(*overrides), tmp_path / name)
        tables.append(pd.read_csv(tmp_path / name / "metrics.csv"))
    assert tables[1]["hessian_lambda_max"].notna().all()
    columns = [c for c in tables[0].columns if c != "wall_time_s" and not c.startswith("hessian")]
    pd.testing.assert_frame_equal(tables[0][columns], tables[1][columns])


def test_diagnostics_leave_batch_norm_statistics_and_the_rng_as_they_were():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    exp = type("Run", (), {"model": model, "device": torch.device("cpu")})()
    before = [b.clone() for b in model.buffers()]
    rng = torch.random.get_rng_state()
    with untouched_run(exp):
        model(torch.randn(8, 3))  # a training-mode forward: updates the running statistics
        assert not torch.equal(model[1].running_mean, before[0])
    assert all(torch.equal(b, a) for b, a in zip(model.buffers(), before, strict=True))
    assert torch.equal(torch.random.get_rng_state(), rng)


def test_without_hyper_steps_the_weights_train_exactly_as_with_a_frozen_lambda(tmp_path):
    """hyper_steps=false against hyper-steps whose SGD step (1e-30) cannot move λ."""
    tables = []
    for name, overrides in (
        ("off", ["hyper_steps=false"]),
        ("frozen", ["hyper_optimizer=sgd", "hyper_optimizer.lr=1e-30"]),
    ):
        (tmp_path / name).mkdir()
        train(config("batch_size=8", *overrides), tmp_path / name)
        tables.append(pd.read_csv(tmp_path / name / "metrics.csv"))
    off, frozen = tables
    assert off["hypergrad_norm"].isna().all() and frozen["hypergrad_norm"].iloc[1:].notna().all()
    splits = ("train", "val", "test")
    columns = [f"{split}_{what}" for split in splits for what in ("loss", "error")] + ["hyper_mean"]
    pd.testing.assert_frame_equal(off[columns], frozen[columns])
    assert off["train_loss"].iloc[-1] < off["train_loss"].iloc[0]


def test_skip_counts_bad_hyper_steps_instead_of_stopping(tmp_path):
    train(config("solver.alpha=1000", "on_failure=skip", "max_skipped_fraction=1"), tmp_path)
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert table["skipped_hyper_steps"].tolist() == [0, 1, 2, 3]
    assert table["solver_diverged"].iloc[1:].all()


def test_a_run_whose_hyper_steps_were_mostly_skipped_fails_at_its_end(tmp_path):
    """on_failure=skip with every hyper-step skipped: the run goes to its end (every row and
    the last checkpoint written), then fails, saying how many were skipped."""
    with pytest.raises(RunFailed, match="3 of 3 hyper-steps were skipped") as caught:
        train(config("solver.alpha=1000", "on_failure=skip"), tmp_path)
    assert caught.value.progress.outer_step == 3
    assert pd.read_csv(tmp_path / "metrics.csv")["outer_step"].tolist() == [0, 1, 2, 3]
    assert (tmp_path / "checkpoint.pt").exists()


def test_a_non_finite_loss_stops_the_run_and_keeps_the_metrics(tmp_path):
    with pytest.raises(RunFailed, match=r"the training loss is (nan|inf)"):
        train(config("optimizer=sgd", "optimizer.lr=1e30"), tmp_path)
    assert pd.read_csv(tmp_path / "metrics.csv")["outer_step"].tolist() == [0]
