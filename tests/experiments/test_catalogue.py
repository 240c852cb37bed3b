"""The experiment catalogue and its figure scripts: every experiment composes, the cheap ones run,
and every figure is drawn from the files of a run (never by re-running it), with the numbers
checked against closed forms where there are any."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf

import hpo_cli
from experiments import (
    figures,
    hessian_condition,
    inverse_comparison,
    neumann_divergence,
    ridge_closed_form,
)
from experiments.common import MissingRun, restore_run, script_main
from hpo_cli.hpo_hessian.cli import analyse_config
from hpo_cli.runner.cli.command import train
from hpo_cli.runner.config.schemas import register_configs
from hpo_cli.runner.config.validation import validate
from hpo_cli.runner.rundir.summary import write_summary
from tests.experiments.test_solver_defaults import run_tiny_study
from tests.support.composed import run_config

CATALOGUE = Path(hpo_cli.__file__).parent / "conf" / "experiment"
NAMES = sorted(path.stem for path in CATALOGUE.glob("*.yaml"))
NEEDS_DATA = {"augment_net"}  # CIFAR-10 files and, in practice, a GPU
PNG = b"\x89PNG\r\n\x1a\n"


def config(name: str, *overrides: str) -> DictConfig:
    return run_config(f"experiment={name}", "plots=false", *overrides)


def make_run(run_dir: Path, name: str, *overrides: str) -> Path:
    """What ``hpo-run experiment=name`` leaves on disk: .hydra/config.yaml, metrics.csv,
    checkpoint.pt and summary.json."""
    cfg = config(name, *overrides)
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    progress = train(cfg, run_dir)
    write_summary(run_dir, status="completed", progress=progress, overrides=list(overrides))
    return run_dir


def make_hessian_run(run_dir: Path, name: str, *overrides: str) -> Path:
    """What ``hpo-hessian experiment=name`` leaves on disk: hessian.json."""
    with initialize_config_module("hpo_cli.conf", version_base="1.3"):
        cfg = compose("hessian", overrides=[f"experiment={name}", "plots=false", *overrides])
    run_dir.mkdir(parents=True)
    analyse_config(cfg, run_dir)
    return run_dir


def test_the_catalogue_holds_the_documented_experiments():
    assert set(NAMES) >= {
        "overfit_validation",
        "distillation",
        "neumann_divergence",
        "ridge_closed_form",
        "reweighting",
        "augment_net",
        "inverse_comparison",
        "hessian_condition",
        "hypergradient_quality",
        "hypergradient_quality_ridge",
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


QUALITY = [  # hypergradient_quality's comparison, cut to seconds
    "inner_steps=5",
    "solver_comparison.budget=2",
    "solver_comparison.horizons=[1,2]",
    "solver_comparison.directions=3",
]
CHEAPER = {
    "hypergradient_quality": [*QUALITY, "model.hidden_sizes=[2]", "solver=identity"],
    "hypergradient_quality_ridge": [*QUALITY, "warmup_inner_steps=50"],
}


RUN_IN_CATALOGUE = {f.name for f in figures.CATALOGUE if f.program == "hpo-run" and f.study is None}
"""The experiments whose short run the ``catalogue`` fixture makes anyway (checked there)."""


def check_short_run(run_dir: Path, name: str, outer_steps: int) -> None:
    """A short run of experiment ``name`` reached ``outer_steps`` with finite validation losses,
    no skipped hyper-step and a solver that never diverged."""
    table = pd.read_csv(run_dir / "metrics.csv")
    assert table["outer_step"].tolist()[-1] == outer_steps, name
    assert table["val_loss"].map(math.isfinite).all(), name
    assert table["skipped_hyper_steps"].iloc[-1] == 0, name
    if name == "optuna_baseline":  # a black-box trial: λ is fixed, no hypergradient
        assert table["solver_diverged"].isna().all()
    else:
        assert (table["solver_diverged"].iloc[1:] == False).all(), name  # noqa: E712 (pandas)


@pytest.mark.parametrize("name", sorted(set(NAMES) - NEEDS_DATA - RUN_IN_CATALOGUE))
def test_cheap_experiments_run_a_few_outer_steps(name, tmp_path):
    train(config(name, "outer_steps=3", "checkpoint_every=3", *CHEAPER.get(name, [])), tmp_path)
    check_short_run(tmp_path, name, 3)


def test_the_catalogue_experiments_run_a_few_outer_steps(catalogue):
    for name in sorted(RUN_IN_CATALOGUE):
        check_short_run(catalogue / "runs" / name, name, 2)


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


def test_neumann_divergence_curves_contrast_the_step_sizes(catalogue, tmp_path):
    run = catalogue / "runs" / "neumann_divergence"
    paths = neumann_divergence.plot(run, tmp_path / "figures", terms=15)
    table = pd.read_csv(tmp_path / "figures" / "neumann_divergence.csv")
    curves = {label: group.set_index("k") for label, group in table.groupby("alpha")}
    no_step = curves["α = 1 (no step)"]
    fixed = curves["fixed α = 0.05"]
    assert no_step.loc[15, "term_ratio"] > 1e3
    assert no_step.loc[1:, "relative_error"].isna().all(), "the library reports divergence"
    assert fixed.loc[15, "term_ratio"] < 1 and fixed["relative_error"].notna().all()
    assert all(path.exists() for path in paths)


SMALL_RUNS = {  # cheaper than make figures' own small settings
    # 300 warm-up steps, not 1000: α = 1 still explodes (10^18 at 15 terms), 0.05 still contracts
    "neumann_divergence": ["warmup_inner_steps=300"],
    "inverse_comparison": ["solver_comparison.every=1", "solver_comparison.budget=12"],
    "hypergradient_quality": ["solver_comparison.every=1", *CHEAPER["hypergradient_quality"]],
    "hypergradient_quality_ridge": [
        "solver_comparison.every=1",
        *CHEAPER["hypergradient_quality_ridge"],
    ],
}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    """A figures folder with a small run of every catalogue figure in ``runs/<name>``."""
    out = tmp_path_factory.mktemp("figures")
    for figure in figures.CATALOGUE:
        run_dir = out / "runs" / figure.name
        if figure.program == "hpo-hessian":
            make_hessian_run(run_dir, figure.name)
        elif figure.study is not None:
            run_tiny_study(run_dir)
        else:
            make_run(run_dir, figure.name, "outer_steps=2", *SMALL_RUNS.get(figure.name, []))
    return out


def test_figures_are_redrawn_from_files_without_rerunning(catalogue, monkeypatch):
    def no_runs(*args, **kwargs):
        raise AssertionError("a completed run was re-run")

    monkeypatch.setattr(figures.subprocess, "run", no_runs)
    short = [  # 3 Neumann terms, not 50: the curves themselves are checked above
        dataclasses.replace(f, plot=_short_divergence_plot) if f.name == "neumann_divergence" else f
        for f in figures.CATALOGUE
    ]
    monkeypatch.setattr(figures, "CATALOGUE", short)
    report = figures.build(catalogue).read_text()
    for figure in figures.CATALOGUE:
        name = figure.name
        figure.check(catalogue / "runs" / name, full=False)  # what --from-disk checks first
        assert (catalogue / f"{name}.png").read_bytes()[:8] == PNG, name
        assert (catalogue / f"{name}.pdf").read_bytes()[:5] == b"%PDF-", name
        assert f"![{name}]({name}.png)\n\n{figure.caption}" in report
    assert "CG's relative error is" in report and "at K = d = 11" in report
    assert "rank 5 of 100" in report


def _short_divergence_plot(run_dir: Path, out_dir: Path) -> list[Path]:
    return neumann_divergence.plot(run_dir, out_dir, terms=3)


def test_from_disk_a_missing_run_is_one_line_naming_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(figures.subprocess, "run", None)  # nothing may run
    monkeypatch.setattr("sys.argv", ["figures", "--out", str(tmp_path), "--from-disk"])
    with pytest.raises(SystemExit) as exit_code:
        figures.main()
    assert exit_code.value.code == 1
    message = capsys.readouterr().err
    run_dir = tmp_path / "runs" / "overfit_validation"
    assert message.count("\n") == 1 and message.startswith("experiments.figures: error: ")
    others = ", ".join(figure.name for figure in figures.CATALOGUE[1:])
    assert message.endswith(
        f"run: hpo-run experiment=overfit_validation outer_steps=50 hydra.run.dir={run_dir} "
        f"(also missing or unfinished: {others})\n"
    )
    with pytest.raises(MissingRun, match=r"run: hpo-run experiment=overfit_validation hydra"):
        figures.build(tmp_path, full=True, from_disk=True)  # paper scale: no small overrides


def test_from_disk_names_hpo_hessian_and_resume_where_they_apply(catalogue, tmp_path):
    shutil.copytree(catalogue / "runs", tmp_path / "runs", ignore=shutil.ignore_patterns("hess*"))
    run_dir = tmp_path / "runs" / "hessian_condition"
    with pytest.raises(MissingRun) as error:
        figures.build(tmp_path, from_disk=True)
    assert str(error.value).endswith(
        f"run: hpo-hessian experiment=hessian_condition hydra.run.dir={run_dir}"
    )
    shutil.copytree(catalogue / "runs" / "hessian_condition", run_dir)
    summary_path = tmp_path / "runs" / "ridge_closed_form" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({**summary, "status": "interrupted"}))
    with pytest.raises(MissingRun) as error:
        figures.build(tmp_path, from_disk=True)
    assert str(error.value).startswith("the run of ridge_closed_form in ")
    assert (
        f"is interrupted, not completed; continue it with: hpo-run resume={summary_path.parent}"
        in str(error.value)
    )


def test_a_figure_script_on_a_missing_run_says_what_to_run(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "no run"
    monkeypatch.setattr("sys.argv", ["ridge_closed_form", str(missing), str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_code:
        script_main(ridge_closed_form.plot, "ridge_closed_form")
    assert exit_code.value.code == 1
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "no summary.json, metrics.csv" in message
    assert f"run: hpo-run experiment=ridge_closed_form hydra.run.dir={missing}" in message


def test_the_inverse_comparison_figure_is_drawn_from_its_csv(catalogue, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(catalogue / "runs" / "inverse_comparison", run_dir)
    (run_dir / "checkpoint.pt").unlink()  # no model to recompute anything from
    paths = inverse_comparison.plot(run_dir, tmp_path)
    assert paths[0].read_bytes()[:8] == PNG
    table = pd.read_csv(run_dir / "solver_comparison.csv").set_index(["outer_step", "solver", "k"])
    sentence = inverse_comparison.describe(run_dir)
    assert f"CG's relative error is {table.loc[(2, 'cg', 11), 'rel_error']:.2g} at K = d = 11" in (
        sentence
    )
    assert f"Neumann's {table.loc[(2, 'neumann', 12), 'rel_error']:.2g} at K = 12" in sentence


def test_hessian_condition_is_seed_004s_rank_deficient_hessian(catalogue, tmp_path):
    run_dir = catalogue / "runs" / "hessian_condition"
    report = hessian_condition.read_report(run_dir)
    spectrum = report["spectrum"]
    assert report["params"] == {"2.weight": [1, 100]} and report["training"]["converged"]
    # H = (2/n)·AAᵀ with A = W₁X (100 × 5 samples of 5 features): rank 5, singular
    assert (report["size"], spectrum["rank"], spectrum["negative_eigenvalues"]) == (100, 5, 0)
    assert spectrum["condition_full"] == math.inf and spectrum["gap"] > 1e10
    eigenvalues = sorted(report["eigenvalues"], key=abs)
    assert spectrum["condition_nonzero"] == pytest.approx(eigenvalues[-1] / eigenvalues[-5])
    assert hessian_condition.plot(run_dir, tmp_path)[0].read_bytes()[:8] == PNG
    assert "rank 5 of 100" in hessian_condition.describe(run_dir)
