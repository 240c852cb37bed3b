"""The experiment catalogue and its figure scripts: every experiment composes, the cheap ones run,
and every figure is drawn from the files of a run (never by re-running it), with the numbers
checked against closed forms where there are any."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf

import hpo_cli
from experiments import figures, inverse_comparison, neumann_divergence, ridge_closed_form
from experiments.common import restore_run
from hpo_cli.config import register_configs, validate
from hpo_cli.summary import write_summary
from hpo_cli.training import train

CATALOGUE = Path(hpo_cli.__file__).parent / "conf" / "experiment"
NAMES = sorted(path.stem for path in CATALOGUE.glob("*.yaml"))
NEEDS_DATA = {"augment_net"}  # CIFAR-10 files and, in practice, a GPU
PNG = b"\x89PNG\r\n\x1a\n"


def config(name: str, *overrides: str) -> DictConfig:
    register_configs()
    with initialize_config_module("hpo_cli.conf", version_base="1.3"):
        return compose("config", overrides=[f"experiment={name}", "plots=false", *overrides])


def make_run(run_dir: Path, name: str, *overrides: str) -> Path:
    """What ``hpo-run experiment=name`` leaves on disk: .hydra/config.yaml, metrics.csv,
    checkpoint.pt and summary.json."""
    cfg = config(name, *overrides)
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    progress = train(cfg, run_dir)
    write_summary(run_dir, status="completed", progress=progress, overrides=list(overrides))
    return run_dir


def test_the_catalogue_holds_the_documented_experiments():
    assert set(NAMES) >= {
        "overfit_validation",
        "distillation",
        "neumann_divergence",
        "ridge_closed_form",
        "reweighting",
        "augment_net",
    }


@pytest.mark.parametrize("name", NAMES)
def test_every_experiment_composes_and_validates(name):
    path = CATALOGUE / f"{name}.yaml"
    assert path.read_text().startswith("# @package _global_")
    register_configs()
    with initialize_config_module("hpo_cli.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={name}"], return_hydra_config=True)
    validate(cfg)
    choices = cfg.hydra.runtime.choices
    for entry in OmegaConf.load(path).defaults:
        ((key, choice),) = entry.items()
        assert choices[key.removeprefix("override /")] == choice, (name, key)


def test_the_overrides_of_an_experiment_take_effect():
    cfg = config("neumann_divergence")
    assert cfg.solver.alpha == 0.05 and list(cfg.model.hidden_sizes) == [8, 4]
    assert cfg.hyper.granularity == "scalar" and "regression1d" in cfg.dataset._target_
    assert "resnet18" in config("augment_net").model._target_


@pytest.mark.parametrize("name", sorted(set(NAMES) - NEEDS_DATA))
def test_cheap_experiments_run_a_few_outer_steps(name, tmp_path):
    train(config(name, "outer_steps=3", "checkpoint_every=3"), tmp_path)
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert table["outer_step"].tolist()[-1] == 3
    assert table["val_loss"].map(math.isfinite).all()
    assert not table["solver_diverged"].iloc[1:].astype(bool).any()
    assert table["skipped_hyper_steps"].iloc[-1] == 0


@pytest.fixture(scope="module")
def ridge_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("ridge"), "ridge_closed_form")


def test_ridge_learns_the_closed_form_optimal_penalty(ridge_run, tmp_path):
    exp = restore_run(ridge_run)
    optimum = ridge_closed_form.optimal_penalty(exp.data)
    learned = exp.hyper.constrained_values()
    assert torch.all(optimum > 0)
    torch.testing.assert_close(learned, optimum, rtol=0.03, atol=0.0)
    paths = ridge_closed_form.plot(ridge_run, tmp_path)
    assert paths[0].read_bytes()[:8] == PNG and paths[1].read_bytes()[:5] == b"%PDF-"


def test_the_optimal_penalty_minimises_the_closed_form_validation_loss(ridge_run):
    data = restore_run(ridge_run).data
    inputs, targets = data.train.inputs, data.train.targets
    gram, moment = inputs.T @ inputs / len(targets), inputs.T @ targets / len(targets)

    def val_loss(c: torch.Tensor) -> float:
        weights = torch.linalg.solve(gram + torch.diag(c), moment)
        return float((data.val.inputs @ weights - data.val.targets).square().mean())

    optimum = ridge_closed_form.optimal_penalty(data)
    best = val_loss(optimum)
    for direction in torch.eye(len(optimum), dtype=optimum.dtype):
        for step in (-0.05, 0.05):
            assert val_loss(optimum + step * direction) > best


def test_inverse_comparison_matches_cg_and_neumann_theory():
    table = inverse_comparison.compare(budget=12)
    by = {name: group.set_index("k") for name, group in table.groupby("solver")}
    dimension = 11  # 10 diabetes features and the bias
    assert by["cg"].loc[dimension, "relative_error"] < 1e-6  # CG is exact in d steps
    assert by["cg"].loc[0, "relative_error"] == pytest.approx(1.0)  # x = 0: only ∂L_v/∂λ = 0
    # a 0-term Neumann series is α·b, parallel to the identity's b
    assert by["neumann"].loc[0, "cosine"] == pytest.approx(by["identity"].loc[0, "cosine"])
    assert by["neumann"].loc[12, "relative_error"] < by["neumann"].loc[0, "relative_error"]


def test_neumann_divergence_curves_contrast_the_step_sizes(tmp_path):
    run = make_run(tmp_path / "run", "neumann_divergence", "outer_steps=2")
    paths = neumann_divergence.plot(run, tmp_path / "figures", terms=15)
    table = pd.read_csv(tmp_path / "figures" / "neumann_divergence.csv")
    curves = {label: group.set_index("k") for label, group in table.groupby("alpha")}
    no_step = curves["α = 1 (no step)"]
    fixed = curves["fixed α = 0.05"]
    assert no_step.loc[15, "term_ratio"] > 1e3
    assert no_step.loc[1:, "relative_error"].isna().all(), "the library reports divergence"
    assert fixed.loc[15, "term_ratio"] < 1 and fixed["relative_error"].notna().all()
    assert all(path.exists() for path in paths)


def test_figures_are_redrawn_from_files_without_rerunning(tmp_path, monkeypatch):
    out = tmp_path / "figures"
    for figure in figures.CATALOGUE:
        make_run(out / "runs" / figure.name, figure.name, "outer_steps=2")

    def no_runs(*args, **kwargs):
        raise AssertionError("a completed run was re-run")

    monkeypatch.setattr(figures.subprocess, "run", no_runs)
    monkeypatch.setattr(figures.neumann_divergence, "plot", _short_divergence_plot)
    report = figures.build(out, budget=3).read_text()
    for name in [figure.name for figure in figures.CATALOGUE] + ["inverse_comparison"]:
        assert (out / f"{name}.png").read_bytes()[:8] == PNG, name
        assert (out / f"{name}.pdf").read_bytes()[:5] == b"%PDF-", name
        assert f"![{name}]({name}.png)" in report
    assert pd.read_csv(out / "inverse_comparison.csv")["k"].max() == 3


def _short_divergence_plot(run_dir: Path, out_dir: Path) -> list[Path]:
    return neumann_divergence.plot(run_dir, out_dir, terms=3)
