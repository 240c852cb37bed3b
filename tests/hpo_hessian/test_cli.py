"""``hpo-hessian`` end to end: files, the seed-004 closed form, an hpo-run run directory, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException

from hpo_cli.analysis.hessian import analyse_eigenvalues, dense_spectrum
from hpo_cli.hpo_hessian.cli import (
    curvature_operator,
    load_run,
    select_parameters,
    validate,
)
from hpo_cli.runner.config.build import build_problem
from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.rundir.checkpoint import load_checkpoint
from tests.support.cli_runs import hpo_hessian

HPO_HESSIAN = str(Path(sys.executable).parent / "hpo-hessian")
PNG = b"\x89PNG\r\n\x1a\n"
# Seed 004's network on 5 samples of 5 features (the runner's regression data have one output):
# a vanishing weight decay (c = 1e-30) keeps the training loss the plain squared error.
SEED_004 = [
    "model=two_layer_linear",
    "dataset=linreg",
    "dataset.features=5",
    "dataset.weights=null",
    "dataset.train_size=5",
    "dataset.val_size=5",
    "dataset.test_size=5",
    "hyper=weight_decay",
    "hyper.init=1e-30",
    "train_steps=0",
    "params=[2.weight]",
]


def hpo_hessian_script(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """The installed console script, in its own process."""
    return subprocess.run(
        [HPO_HESSIAN, *overrides, f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        timeout=240,
    )


def config(*overrides: str):
    with initialize_config_module("hpo_cli.conf", version_base="1.3"):
        return compose("hessian", list(overrides))


def test_seed_004_through_the_cli_matches_the_kronecker_form(tmp_path):
    """L = (1/n) Σ (y − W₂W₁x)² + c‖W‖² with W₂ (1 × 100): H = (2/n) AAᵀ + 2cI with A = W₁X
    (samples as columns), i.e. I₁ ⊗ (2/n)AAᵀ: rank 5 of 100 at any weights."""
    result = hpo_hessian_script(tmp_path, *SEED_004)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "hessian.json").read_text())
    for name in ("spectrum.png", "density.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG, name
    assert report["mode"] == "dense" and report["size"] == 100 and report["dtype"] == "float64"
    assert report["params"] == {"2.weight": [1, 100]}
    problem = build_problem(config(*SEED_004))  # the same model, rebuilt here
    activations = problem.model[1].weight.detach() @ problem.data.train.inputs.T  # A = W₁X
    (decay,) = problem.hyper.coefficients()
    closed_form = 2 / 5 * activations @ activations.T + 2 * decay * torch.eye(100)
    expected = analyse_eigenvalues(torch.linalg.eigvalsh(closed_form))
    eigenvalues = torch.tensor(report["eigenvalues"], dtype=torch.float64)
    assert float((eigenvalues - expected.eigenvalues).abs().max()) < 1e-8 * expected.largest
    assert report["spectrum"]["rank"] == expected.rank == 5
    assert report["spectrum"]["condition_nonzero"] == pytest.approx(
        expected.condition_nonzero, rel=1e-8
    )
    assert report["spectrum"]["condition_full"] == "inf"
    assert report["neumann"]["message"].startswith("stalls:")
    assert "rank 5 of 100" in result.stdout


def test_experiment_hessian_condition_is_the_seed_004_setting():
    """hpo-hessian composes conf/experiment/NAME.yaml, then its own settings for the same name
    (conf/hessian_experiment/NAME.yaml): the setting whose Kronecker form is checked above."""
    cfg = config("experiment=hessian_condition", "train_steps=0")
    validate(cfg)
    reference = config(*SEED_004)
    for key in ("dataset", "model", "hyper", "params", "dtype", "train_steps", "seed"):
        assert cfg[key] == reference[key], key
    default = config()
    assert default.params is None and default.dataset._target_.endswith("load_digits")
    with pytest.raises(ConfigCompositionException, match="Could not override 'solver'"):
        config("experiment=overfit_validation")  # hpo-run's settings: analyse its run_dir


def test_a_run_directory_is_analysed_at_its_checkpoint(finished_run, tmp_path):
    run_dir, out = finished_run, tmp_path / "hessian"
    result = hpo_hessian(out, f"run_dir={run_dir}", "params=[3.weight]", "plots=false")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "hessian.json").read_text())
    assert "outer step 4" in report["source"] and report["training"] is None
    # The same Hessian, from the checkpoint's weights and decay loaded here by hand.
    reference, _ = load_run(config(f"run_dir={run_dir}"))
    state = load_checkpoint(run_dir)
    assert torch.equal(
        reference.model.state_dict()["3.weight"], state["model"]["3.weight"].double()
    )
    params = list(select_parameters(reference.model, ["3.weight"]).values())
    expected = dense_spectrum(curvature_operator(reference, params, "hessian")).eigenvalues
    eigenvalues = torch.tensor(report["eigenvalues"], dtype=torch.float64)
    assert float((eigenvalues - expected).abs().max()) < 1e-10 * float(expected.abs().max())


def test_an_analysis_aimed_at_a_run_or_an_analysis_is_refused_and_changes_nothing(
    finished_run, tmp_path
):
    """``hydra.run.dir=<a run>`` rewrote that run's ``.hydra/`` records (Hydra wrote them before
    the analysis started); now the directory is claimed first, and a run's or an earlier
    analysis's directory is refused in one line."""

    def files(path: Path) -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}

    before = files(finished_run)
    result = hpo_hessian(finished_run, "train_steps=0", "params=[3.weight]", "plots=false")
    assert result.returncode == 2 and "already holds a run or an analysis" in result.stderr
    assert files(finished_run) == before
    out = tmp_path / "hessian"
    assert hpo_hessian(out, "train_steps=0", "params=[3.weight]", "plots=false").returncode == 0
    assert (out / ".hydra" / "config.yaml").exists() and (out / "hpo-hessian.log").exists()
    analysis = files(out)
    assert hpo_hessian(out, "train_steps=0", "params=[3.bias]", "plots=false").returncode == 2
    assert files(out) == analysis


def test_an_output_directory_under_a_file_is_refused_in_one_line(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    result = hpo_hessian(tmp_path / "afile" / "out", "train_steps=0", "plots=false")
    lines = [line for line in result.stderr.splitlines() if line.startswith("hpo-hessian: error:")]
    assert result.returncode == 2 and len(lines) == 1 and "is a file" in lines[0]


def test_an_unknown_parameter_fails_in_one_line(tmp_path):
    result = hpo_hessian(tmp_path, "train_steps=0", "params=[3.wieght]", "plots=false")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("hpo-hessian: error:")]
    assert len(lines) == 1
    assert "params=['3.wieght'] is invalid" in lines[0] and "3.weight" in lines[0]
    assert not (tmp_path / "hessian.json").exists()


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("mode=eigen", "mode=eigen is invalid"),
        ("curvature=fisher", "curvature=fisher is invalid"),
        ("probes=1", "probes=1 is invalid"),
        ("neumann_alpha=-1", "neumann_alpha=-1.0 is invalid"),
        ("cg_tol=2", "cg_tol=2.0 is invalid"),
        ("rank_rtol=0", "rank_rtol=0.0 is invalid"),
    ],
)
def test_out_of_range_values_name_their_key(override, needle):
    with pytest.raises(ConfigError, match=needle):
        validate(config(override))


def test_a_directory_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is not an hpo-run run directory"):
        load_run(config(f"run_dir={tmp_path}"))
