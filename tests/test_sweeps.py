"""``hpo-run -m`` sweeps with Hydra's basic, joblib and submitit (local mode, slow group)
launchers, the SLURM launcher config, and their aggregation into sweep.csv, sweep_summary.csv and
mean ± std plots (by the callback and by ``python -m hpo_cli.sweep``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from hpo_cli.config import register_configs
from hpo_cli.sweep import aggregate, collect

HPO_RUN = str(Path(sys.executable).parent / "hpo-run")
TINY = [
    "outer_steps=3",
    "inner_steps=5",
    "dataset.train_size=20",
    "dataset.val_size=20",
    "dataset.test_size=40",
    "model.hidden_sizes=[8]",
    "batch_size=8",
    "warmup_inner_steps=50",
    "plots=false",
    "progress=false",
]
SWEEP = ["solver=neumann,identity", "seed=0,1"]


def sweep(sweep_dir: Path, *overrides: str) -> Path:
    result = subprocess.run(
        [HPO_RUN, "-m", *overrides, *TINY, f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    return sweep_dir


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory) -> Path:
    return sweep(tmp_path_factory.mktemp("basic") / "sweep", *SWEEP)


@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory) -> Path:
    launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    return sweep(tmp_path_factory.mktemp("joblib") / "sweep", *launcher, *SWEEP)


def test_the_callback_collects_every_job(basic_sweep):
    table = pd.read_csv(basic_sweep / "sweep.csv")
    assert sorted(table["job"].unique()) == [0, 1, 2, 3]
    assert set(table["setting"]) == {"solver=neumann", "solver=identity"}
    assert table.groupby("setting")["seed"].unique().map(sorted).tolist() == [[0, 1], [0, 1]]
    assert table.groupby("job").size().tolist() == [4, 4, 4, 4]  # outer steps 0..3
    for name in ("sweep.png", "sweep.pdf"):
        assert (basic_sweep / name).stat().st_size > 1000


def test_the_summary_is_mean_and_std_of_the_jobs_final_values(basic_sweep):
    summary = pd.read_csv(basic_sweep / "sweep_summary.csv").set_index("setting")
    finals: dict[str, list[float]] = {}
    for job_dir in sorted(p for p in basic_sweep.iterdir() if p.is_dir()):
        overrides = json.loads((job_dir / "summary.json").read_text())
        solver = next(o for o in overrides["overrides"] if o.startswith("solver="))
        finals.setdefault(solver, []).append(overrides["final"]["test_loss"])
    for setting, values in finals.items():
        assert summary.loc[setting, "jobs"] == 2
        assert summary.loc[setting, "test_loss_mean"] == pytest.approx(sum(values) / 2)
        assert summary.loc[setting, "test_loss_std"] == pytest.approx(
            abs(values[0] - values[1]) / 2**0.5
        )


def test_the_joblib_launcher_gives_the_same_sweep(basic_sweep, joblib_sweep):
    basic, joblib = (
        pd.read_csv(d / "sweep.csv").drop(columns="wall_time_s")
        for d in (basic_sweep, joblib_sweep)
    )
    pd.testing.assert_frame_equal(basic, joblib)


def test_the_script_reaggregates_from_files_alone(basic_sweep, tmp_path):
    copy = tmp_path / "sweep"
    subprocess.run(["cp", "-r", str(basic_sweep), str(copy)], check=True)
    for name in ("sweep.csv", "sweep_summary.csv", "sweep.png"):
        (copy / name).unlink()
    result = subprocess.run(
        [sys.executable, "-m", "hpo_cli.sweep", str(copy)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    pd.testing.assert_frame_equal(
        pd.read_csv(copy / "sweep.csv"), pd.read_csv(basic_sweep / "sweep.csv")
    )
    assert (copy / "sweep.png").exists()


def test_a_sweep_without_metrics_is_refused(tmp_path):
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    with pytest.raises(ValueError, match="no job"):
        collect(tmp_path)
    with pytest.raises(ValueError, match="no job"):
        aggregate(tmp_path)


def test_the_slurm_launcher_config_extends_submitit():
    register_configs()
    with initialize_config_module("hpo_cli.conf", version_base="1.3"):
        overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"]
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1
    assert launcher.timeout_min == 60


@pytest.mark.slow
def test_the_submitit_local_launcher_gives_the_same_runs(basic_sweep, tmp_path):
    sweep(tmp_path / "sweep", "hydra/launcher=submitit_local", SWEEP[0], "seed=0")
    submitit, basic = (
        pd.read_csv(d / "sweep.csv").drop(columns=["job", "wall_time_s"])
        for d in (tmp_path / "sweep", basic_sweep)
    )
    assert set(submitit["setting"]) == {"solver=neumann", "solver=identity"}
    basic = basic[basic["seed"] == 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(basic, submitit)
