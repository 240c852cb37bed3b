"""``hpo-run`` under ``torchrun``, ``srun`` and submitit's launcher (data parallelism,
docs/distributed.md): two processes write the metrics of the one-process run (float64, to
rounding), rank 1 writes nothing, a checkpoint resumes with the same number of processes and is
refused with another, a sweep's job of two submitit tasks is one run of two processes (and
resumes as one when requeued), and what N processes cannot do is refused in one line before
anything is written.

The refusals run in this process with N faked (``WORLD_SIZE``, SLURM's step variables, or
``distributed.world_size`` patched); the runs of several processes start them and are in the
slow group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hpo_cli.core import distributed
from hpo_cli.runner.cli import entry
from tests.support.cli_runs import call_main
from tests.support.tiny_runs import tiny

FLOAT64 = ("dtype=float64", "hyper_train_batch=8", "hyper_val_batch=10")
RUN = tiny(*FLOAT64)
"""The tiny run in float64, the hyper-step's batches drawn at random (and cut into halves)."""


def hpo_run(*arguments: str) -> tuple[int, list[str]]:
    """``hpo-run ARGUMENTS`` in this process: its exit status and its error lines."""
    result = call_main(entry.main, "hpo-run", list(arguments))
    return result.returncode, [line for line in result.stderr.splitlines() if "error:" in line]


def torchrun(cwd: Path, *arguments: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2 hpo-run ARGUMENTS`` in ``cwd``."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    hpo = str(Path(sys.executable).parent / "hpo-run")
    return subprocess.run(
        [*command, hpo, *arguments], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def srun(cwd: Path, *arguments: str) -> list[subprocess.CompletedProcess]:
    """``srun --ntasks=2 hpo-run ARGUMENTS`` on this machine, as srun starts it: two ``hpo-run``
    processes with the variables srun gives the tasks of a job step (no torchrun's), the
    rendezvous on the step's first host (127.0.0.1) at the port derived from the job's id."""
    hpo = str(Path(sys.executable).parent / "hpo-run")
    step = {
        "SLURM_JOB_ID": str(os.getpid()),
        "SLURM_STEP_ID": "0",
        "SLURM_NTASKS": "2",
        "SLURM_STEP_NUM_TASKS": "2",
        "SLURM_STEP_NODELIST": "127.0.0.1",
    }
    tasks = [
        subprocess.Popen(
            [hpo, *arguments],
            cwd=cwd,
            env={**os.environ, **step, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    ended = []
    for task in tasks:
        out, err = task.communicate(timeout=600)
        ended.append(subprocess.CompletedProcess(task.args, task.returncode, out, err))
    return ended


def numbers(run_dir: Path) -> pd.DataFrame:
    """metrics.csv without its wall times."""
    return pd.read_csv(run_dir / "metrics.csv").drop(columns=["wall_time_s"])


@pytest.mark.parametrize(
    ("variables", "launcher"),
    [
        ({"WORLD_SIZE": "2"}, "torchrun"),
        ({"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "0", "SLURM_STEP_NODELIST": "n1"}, "srun"),
    ],
)
def test_multirun_under_torchrun_or_srun_is_refused(monkeypatch, tmp_path, variables, launcher):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    code, lines = hpo_run("-m", *RUN, "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert code == 2 and len(lines) == 1 and f"--multirun under {launcher} (2" in lines[0], lines
    assert "hydra.launcher.tasks_per_node=N" in lines[0]
    assert not (tmp_path / "sweep").exists()


def test_a_launchers_variable_that_makes_no_sense_is_refused_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
    monkeypatch.setenv("SLURM_PROCID", "2")
    code, lines = hpo_run(*RUN, f"hydra.run.dir={tmp_path}")
    assert code == 2 and len(lines) == 1 and "rank 2 of 2 processes" in lines[0], lines
    assert not tmp_path.joinpath("metrics.csv").exists()


def test_a_batch_that_two_processes_cannot_share_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    code, lines = hpo_run(*tiny("batch_size=7"), f"hydra.run.dir={tmp_path}")
    assert code == 2 and len(lines) == 1, lines
    assert "batch_size=7 draws 7 examples, which 2 processes cannot share equally" in lines[0]
    assert not (tmp_path / "metrics.csv").exists()


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("optimizer=hessian_free", "the HessianFree inner optimiser is not data parallel"),
        ("precision=16-mixed", "precision=16-mixed is not data parallel"),
        ("solver_comparison.every=2", "solver_comparison.every=2 runs in one process only"),
    ],
)
def test_what_two_processes_cannot_do_is_refused(monkeypatch, tmp_path, override, needle):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    code, lines = hpo_run(*tiny(override), f"hydra.run.dir={tmp_path}")
    assert code == 2 and len(lines) == 1 and needle in lines[0], lines
    assert not (tmp_path / "metrics.csv").exists()


def test_a_checkpoint_resumes_only_with_the_processes_that_wrote_it(monkeypatch, tmp_path):
    assert hpo_run(*RUN, f"hydra.run.dir={tmp_path}")[0] == 0
    saved = (tmp_path / ".hydra" / "config.yaml").read_bytes()
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    code, lines = hpo_run(f"resume={tmp_path}", "outer_steps=6")
    assert code == 2 and len(lines) == 1, lines
    assert "written by a run of 1 process(es), not 2" in lines[0]
    assert (tmp_path / ".hydra" / "config.yaml").read_bytes() == saved  # the resume changed nothing
    assert numbers(tmp_path)["outer_step"].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_two_processes_write_the_one_process_run_and_resume_it(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert hpo_run(*tiny("outer_steps=6", *FLOAT64), f"hydra.run.dir={one}")[0] == 0
    launched = torchrun(tmp_path, *RUN, f"hydra.run.dir={two}")
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # rank 1 wrote nothing
    resumed = torchrun(tmp_path, f"resume={two}", "outer_steps=6")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = numbers(one), numbers(two)
    assert got["outer_step"].tolist() == [0, 1, 2, 3, 4, 5, 6]
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-12)
    code, lines = hpo_run(f"resume={two}", "outer_steps=8")
    assert code == 2 and "written by a run of 2 process(es), not 1" in lines[0], lines


@pytest.mark.slow
def test_two_srun_tasks_write_the_one_process_run(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert hpo_run(*RUN, f"hydra.run.dir={one}")[0] == 0
    tasks = srun(tmp_path, *RUN, f"hydra.run.dir={two}")
    assert [t.returncode for t in tasks] == [0, 0], [t.stderr[-3000:] for t in tasks]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # rank 1 wrote nothing
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    pd.testing.assert_frame_equal(numbers(two), numbers(one), check_exact=False, rtol=0, atol=1e-12)
    code, lines = hpo_run(f"resume={two}", "outer_steps=6")  # it was a run of 2 processes
    assert code == 2 and "written by a run of 2 process(es), not 1" in lines[0], lines


@pytest.mark.slow
def test_a_sweep_through_submitit_runs_each_job_in_its_tasks(tmp_path):
    """``hydra/launcher=submitit_local`` with ``tasks_per_node=2``: each job of the sweep is one
    run of 2 processes, whose metrics are the one-process job's; a job started again on its
    killed run (no summary.json: a requeue) resumes it in both tasks."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert hpo_run("-m", *RUN, "seed=0,1", f"hydra.sweep.dir={one}")[0] == 0

    def submitit_sweep(seeds: str) -> None:
        launcher = ("hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2")
        hpo = str(Path(sys.executable).parent / "hpo-run")
        launched = subprocess.Popen(
            [hpo, "-m", *RUN, f"seed={seeds}", *launcher, f"hydra.sweep.dir={two}"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # submitit's processes too, for the kill below
        )
        try:
            stderr = launched.communicate(timeout=600)[1]
        except subprocess.TimeoutExpired:
            os.killpg(launched.pid, signal.SIGKILL)  # hung tasks: none left behind
            launched.communicate()
            stderr = "timed out after 600 s\n"
        logs = "".join(p.read_text() for p in sorted((two / ".submitit").rglob("*.err")))
        assert launched.returncode == 0, stderr[-2000:] + logs[-3000:]

    submitit_sweep("0,1")
    for job in ("0", "1"):
        assert sorted(p.name for p in (two / job).iterdir()) == sorted(
            p.name for p in (one / job).iterdir()
        )
        got, expected = numbers(two / job), numbers(one / job)
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-12)
        code, lines = hpo_run(f"resume={two / job}", "outer_steps=6")
        assert code == 2 and "written by a run of 2 process(es), not 1" in lines[0], lines
    assert not numbers(two / "0").equals(numbers(two / "1"))  # two seeds, two runs
    for job in ("0", "1"):
        (two / job / "summary.json").unlink()  # killed after its last checkpoint
    submitit_sweep("0,1")  # both jobs requeued
    said = [p.read_text().count("resuming the interrupted run") for p in two.rglob("*_log.out")]
    assert sorted(said) == [0] * 4 + [1] * 4, said  # in both tasks of each job, the second time
    for job in ("0", "1"):
        assert json.loads((two / job / "summary.json").read_text())["status"] == "completed"
        pd.testing.assert_frame_equal(numbers(two / job), numbers(one / job), rtol=0, atol=1e-12)


@pytest.mark.slow
def test_two_processes_with_a_compiled_inner_step_write_the_one_process_eager_run(tmp_path):
    """compile=true under torchrun: each process compiles its inner step; the gradients are
    still averaged between backward and the compiled optimiser step (core/compiled.py)."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert hpo_run(*RUN, f"hydra.run.dir={one}")[0] == 0
    launched = torchrun(tmp_path, *RUN, "compile=true", f"hydra.run.dir={two}")
    assert launched.returncode == 0, launched.stderr[-3000:]
    expected, got = numbers(one), numbers(two)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-12)
