"""examples/: the outside project (its own package and conf/) and the hand-written loop."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hpo_cli.runner.cli.command import train
from tests.support.config_dirs import compose_with
from tests.support.tiny_runs import BRIEF

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ROOT / "examples" / "wine_project"
HPO_RUN = str(Path(sys.executable).parent / "hpo-run")


def test_the_hand_written_loop_gains_hyper_steps():
    spec = importlib.util.spec_from_file_location("own_loop", ROOT / "examples" / "own_loop.py")
    own_loop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(own_loop)
    result = own_loop.main(["--outer-steps", "2", "--inner-steps", "3"])
    assert all(value == value for value in result.values())  # finite, not NaN
    assert result["decay_mean"] != pytest.approx(1e-2, rel=1e-6)  # λ was stepped


def test_the_outside_project_trains_from_its_own_config_directory(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(PROJECT))
    progress = train(compose_with(PROJECT / "conf", "experiment=wine", *BRIEF), tmp_path)
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert progress.outer_step == 2 and len(table) == 3
    assert table["hyper_max"].iloc[-1] != table["hyper_max"].iloc[0]  # per-feature λ moved
    assert table["test_error"].notna().all()


@pytest.mark.slow
def test_the_readme_command_sweeps_and_resumes_the_outside_project(tmp_path):
    """The README's command with -m (two seeds), then resume= of one job from another folder,
    without --config-dir: the run remembers the project's config directory."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    sweep = tmp_path / "sweep"
    command = [HPO_RUN, "-m", "--config-dir", "examples/wine_project/conf", "experiment=wine"]
    result = subprocess.run(
        [*command, *BRIEF, "seed=0,1", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(len(pd.read_csv(sweep / job / "metrics.csv")) == 3 for job in ("0", "1"))
    result = subprocess.run(
        [HPO_RUN, f"resume={sweep / '0'}", "outer_steps=3"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert pd.read_csv(sweep / "0" / "metrics.csv")["outer_step"].tolist() == [0, 1, 2, 3]
