"""``hpo-run`` end to end, as a user runs it: files written, resume after kill -9, bad input.

Most commands run in this process (:mod:`cli_runs`: ``main()`` with ``sys.argv`` set); the
console script itself runs in a separate process where that is the point: the run killed with
-9, and the installed wheel.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from hpo_cli.runner.cli import command
from tests.support import tiny_runs
from tests.support.cli_runs import Result, hpo_run
from tests.support.tiny_runs import TINY, interrupt_at

HPO_RUN = str(Path(sys.executable).parent / "hpo-run")
ROOT = Path(__file__).resolve().parents[2]


def metrics(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "metrics.csv")


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("hpo-run: error:")]


def test_a_short_run_writes_every_file(finished_run):
    for name in ("metrics.csv", "summary.json", "checkpoint.pt", "hpo-run.log"):
        assert (finished_run / name).exists(), name
    for name in ("errors.png", "losses.png", "hyperparameters.png", "solver.png"):
        assert (finished_run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    table = metrics(finished_run)
    assert table["outer_step"].tolist() == [0, 1, 2, 3, 4]
    assert table["total_inner_steps"].tolist() == [100, 105, 110, 115, 120]
    assert table["solver_hvps"].iloc[1:].gt(0).all()
    assert table["hyper_min"].gt(0).all(), "softplus keeps every decay positive"
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["outer_steps"] == 4
    assert summary["final"]["test_error"] == pytest.approx(table["test_error"].iloc[-1])
    assert set(summary["time_s"]) >= {"total", "inner", "hypergradient", "eval"}
    assert summary["versions"]["torch"] and summary["device"] == "cpu"
    assert "outer_steps=4" in summary["overrides"]
    log = (finished_run / "hpo-run.log").read_text()
    assert "outer 4:" in log and "\r" not in log
    assert ", ETA " in log.split("outer 4:")[1].splitlines()[0]


def test_a_second_run_into_the_same_directory_is_refused(finished_run):
    before = (finished_run / "metrics.csv").read_text()
    result = hpo_run(finished_run, *TINY)
    assert result.returncode == 2
    assert "resume=" in error_lines(result)[0]
    assert (finished_run / "metrics.csv").read_text() == before


def test_resume_can_extend_a_finished_run(finished_run, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run, run_dir)
    result = hpo_run(None, f"resume={run_dir}", "outer_steps=6")
    assert result.returncode == 0, result.stderr
    assert metrics(run_dir)["outer_step"].tolist() == [0, 1, 2, 3, 4, 5, 6]


def test_resume_after_kill_9_has_no_gap_and_no_duplicate(tmp_path):
    """Kill the run between checkpoints, resume it, and compare with an uninterrupted run."""
    settings = [*TINY[4:], "outer_steps=24", "inner_steps=10", "checkpoint_every=7"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert hpo_run(whole, *settings).returncode == 0

    process = subprocess.Popen(
        [HPO_RUN, *settings, f"hydra.run.dir={killed}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline:
        rows = len(metrics(killed)) if (killed / "metrics.csv").exists() else 0
        if (killed / "checkpoint.pt").exists() and rows >= 10:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    rows_at_kill = len(metrics(killed))
    assert rows_at_kill < 25

    result = hpo_run(None, f"resume={killed}")
    assert result.returncode == 0, result.stderr
    columns = [c for c in metrics(whole).columns if c != "wall_time_s"]
    pd.testing.assert_frame_equal(metrics(whole)[columns], metrics(killed)[columns])
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["outer_steps"] == 24


def test_sigterm_checkpoints_the_last_step_and_the_resume_equals_an_uninterrupted_run(tmp_path):
    """SIGTERM (what SLURM, submitit and Kubernetes send) to the console script between two
    checkpoints: exit 143, one error line with the resume command, summary.json interrupted, the
    last completed step checkpointed; the resume in a folder whose name holds an apostrophe and
    spaces (quoted for the shell and for Hydra) gives the uninterrupted run's metrics."""
    settings = [*TINY[4:], "outer_steps=60", "inner_steps=10", "checkpoint_every=50"]
    whole, stopped = tmp_path / "whole", tmp_path / "it's a run"
    assert hpo_run(whole, *settings).returncode == 0

    process = subprocess.Popen(
        [HPO_RUN, *settings, f'hydra.run.dir="{stopped}"'],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline:
        if (stopped / "metrics.csv").exists() and len(metrics(stopped)) >= 4:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=100)
    assert process.returncode == 143, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("hpo-run: error:")]
    assert len(lines) == 1 and "interrupted by SIGTERM" in lines[0], stderr
    command = lines[0].split("(continue with: ", 1)[1].removesuffix(")")
    assert shlex.split(command)[-2:] == ["hpo-run", f"resume={stopped}"]
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["error"] == "interrupted by SIGTERM"
    assert 3 <= summary["outer_steps"] < 60  # checkpoint_every=50: the stop wrote this one
    assert len(metrics(stopped)) == summary["outer_steps"] + 1

    result = hpo_run(None, *shlex.split(command)[-1:])
    assert result.returncode == 0, result.stderr
    columns = [c for c in metrics(whole).columns if c != "wall_time_s"]
    pd.testing.assert_frame_equal(metrics(whole)[columns], metrics(stopped)[columns])
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["outer_steps"] == 60


def test_ctrl_c_says_sigint_once_and_suggests_a_resume_quoted_for_the_shell(tmp_path, monkeypatch):
    """Ctrl-C: exit 130, ``interrupted (SIGINT)`` on stderr once (not again in the console's
    log, still in hpo-run.log), the resume quoted for a path with spaces; SIGTERM's handler is
    the one of before the run afterwards."""
    interrupt_at(monkeypatch, 3)
    monkeypatch.setenv("PYTHONPATH", "/my packages")  # the user's own, repeated in the resume
    run_dir = tmp_path / "a run"
    before = signal.getsignal(signal.SIGTERM)
    result = hpo_run(None, *TINY, f'hydra.run.dir="{run_dir}"')
    assert signal.getsignal(signal.SIGTERM) is before
    assert result.returncode == 130, result.stderr
    expected = (
        f"hpo-run: error: interrupted (SIGINT); the metrics and the last checkpoint are kept in "
        f"{run_dir} (continue with: PYTHONPATH='/my packages' hpo-run 'resume={run_dir}')"
    )
    assert error_lines(result) == [expected]
    assert "interrupted (SIGINT)" not in result.stdout
    assert "interrupted (SIGINT)" in (run_dir / "hpo-run.log").read_text()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["optimizer.lr=0"], "optimizer.lr=0.0 is invalid"),
        (["dataset.train_size=2000"], "more than the 1797 examples of digits"),
        (["solver=neumann", "solver.terms=-1"], "neumann.terms must be >= 1"),
    ],
)
def test_invalid_values_fail_in_one_line_before_training(tmp_path, overrides, needle):
    """One case per stage (schema range check, data loading, solver); the rest in test_config."""
    result = hpo_run(tmp_path, *overrides)
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert not (tmp_path / "metrics.csv").exists()


def test_unknown_option_shows_hydras_choices(tmp_path):
    result = hpo_run(tmp_path, "solver=newton")
    assert result.returncode == 2
    assert "Could not find 'solver/newton'" in result.stderr
    assert "neumann" in result.stderr


OWN_MODEL = "tests.support.own_problem.WideNet"


@pytest.mark.parametrize(
    ("arguments", "needles"),
    [
        (["solver.tol_x=1"], ["did you mean solver.tol?", "valid keys of solver: alpha,"]),
        (["+solver.tol_x=1"], ["did you mean solver.tol?", "valid keys: alpha,"]),
        (
            ["model.hiden_sizes=[8]"],
            ["did you mean model.hidden_sizes?", "valid keys of model: activation, hidden_sizes"],
        ),
        (["optimizer.learning_rate=0.1"], ["valid keys of optimizer: betas, eps, lr,"]),
        (["optimzer.lr=0.1"], ["did you mean optimizer.lr?"]),
        (["solver=neuman"], ["did you mean neumann?", "cg, exact, first_order, identity, neumann"]),
        (["model=wide"], ["hpo-run --config-dir DIR model=wide", "model/wide.yaml"]),
        (["--config-dir", "CONF", "model=wide"], ["it must be model/wide.yaml in CONF"]),
        (
            [f"model._target_={OWN_MODEL}", "model.hidden_sizes=[8]"],
            [
                f"model.hidden_sizes is not a parameter of {OWN_MODEL}",
                f"~model +model._target_={OWN_MODEL}",
                "--config-dir DIR model=<name>",
            ],
        ),
    ],
)
def test_a_configuration_error_says_how_to_fix_it(tmp_path, arguments, needles):
    """One line, exit 2, nothing written, and the fix on the line: the closest key or option,
    the valid keys, the flag for a directory of one's own, the way to replace a node."""
    conf = tmp_path / "conf"
    conf.mkdir()
    run_dir = tmp_path / "run"
    result = hpo_run(run_dir, *[str(conf) if a == "CONF" else a for a in arguments])
    lines = error_lines(result)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    for needle in needles:
        assert needle.replace("CONF", str(conf)) in lines[0], lines[0]
    assert not run_dir.exists()


def test_resume_of_a_directory_that_is_not_a_run(tmp_path):
    result = hpo_run(None, f"resume={tmp_path}")
    assert result.returncode == 2
    assert "is not an hpo-run run directory" in error_lines(result)[0]


def test_a_diverging_solver_stops_the_run_and_keeps_its_files(tmp_path):
    result = hpo_run(tmp_path, *TINY, "solver.alpha=1000")
    assert result.returncode == 1
    line = error_lines(result)[0]
    assert "neumann solver diverged" in line and "no checkpoint had been written yet" in line
    assert len(metrics(tmp_path)) == 1, "the evaluation before the first hyper-step is kept"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "diverged" in summary["error"]


def test_a_wheel_install_finds_its_configs(tmp_path):
    """Build a wheel, install it away from the source tree, and run from there."""
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheel_dir.glob("hpo_cli-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "hpo_cli/conf/config.yaml" in names and "hpo_cli/conf/solver/cg.yaml" in names
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    script = (
        "import sys, hpo_cli.runner.cli.entry as cli; "
        f"assert cli.__file__.startswith({str(target)!r}), cli.__file__; "
        "sys.argv = ['hpo-run', *sys.argv[1:]]; cli.main()"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", script, *TINY, f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "metrics.csv").exists()


@pytest.mark.parametrize("killed", [False, True], ids=["interrupted", "killed"])
def test_a_requeued_multirun_job_resumes_its_interrupted_run(tmp_path, monkeypatch, killed):
    """A job of a multirun run again in its own folder (submitit's requeue after SIGTERM or its
    preemption signal, or after a kill -9 that left no summary.json) continues its run instead
    of refusing the folder; the metrics equal an uninterrupted job's. A job with other
    overrides is still refused."""
    whole, job = tmp_path / "whole", tmp_path / "job"
    assert math.isfinite(tiny_runs.run(whole, multirun=True))
    interrupt_at(monkeypatch, 4)
    with pytest.raises(SystemExit, match="130"):
        tiny_runs.run(job, multirun=True)
    monkeypatch.undo()
    assert json.loads((job / "summary.json").read_text())["status"] == "interrupted"
    if killed:
        (job / "summary.json").unlink()  # as kill -9 leaves it
    assert math.isnan(tiny_runs.run(job, "seed=1", multirun=True))  # not its run: refused
    assert math.isfinite(tiny_runs.run(job, multirun=True))
    columns = [c for c in metrics(whole).columns if c != "wall_time_s"]
    pd.testing.assert_frame_equal(metrics(whole)[columns], metrics(job)[columns])
    assert json.loads((job / "summary.json").read_text())["status"] == "completed"


def test_the_suggested_resume_of_a_run_of_two_processes_is_a_torchrun(monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    expected = "torchrun --nproc_per_node=2 $(which hpo-run) 'resume=/runs/a b'"
    assert command.resume_command(Path("/runs/a b")) == expected
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # 2 nodes of 1: the launch's own options
    assert command.resume_command(Path("/r")).startswith("torchrun <the same options> ")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert command.resume_command(Path("/r")) == "hpo-run resume=/r"


def test_the_suggested_resume_of_a_run_of_srun_tasks_is_an_srun(monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)
    for name, value in {"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "0"}.items():
        monkeypatch.setenv(name, value)
    assert command.resume_command(Path("/r")) == "srun --ntasks=4 hpo-run resume=/r"
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")
    assert command.resume_command(Path("/r")) == "hpo-run resume=/r"
