"""``hpo-run`` under ``torchrun`` (data parallelism, docs/distributed.md): two processes write the
metrics of the one-process run (float64, to rounding), rank 1 writes nothing, a checkpoint
resumes with the same number of processes and is refused with another, and what N processes
cannot do is refused in one line before anything is written.

The refusals run in this process with N faked (``WORLD_SIZE``, or ``distributed.world_size``
patched); the ``torchrun`` runs start processes and are in the slow group.
"""

from __future__ import annotations

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


def numbers(run_dir: Path) -> pd.DataFrame:
    """metrics.csv without its wall times."""
    return pd.read_csv(run_dir / "metrics.csv").drop(columns=["wall_time_s"])


def test_multirun_under_torchrun_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, lines = hpo_run("-m", *RUN, "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert code == 2 and len(lines) == 1 and "--multirun under torchrun" in lines[0], lines
    assert not (tmp_path / "sweep").exists()


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
def test_two_processes_with_a_compiled_inner_step_write_the_one_process_eager_run(tmp_path):
    """compile=true under torchrun: each process compiles its inner step; the gradients are
    still averaged between backward and the compiled optimiser step (core/compiled.py)."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert hpo_run(*RUN, f"hydra.run.dir={one}")[0] == 0
    launched = torchrun(tmp_path, *RUN, "compile=true", f"hydra.run.dir={two}")
    assert launched.returncode == 0, launched.stderr[-3000:]
    expected, got = numbers(one), numbers(two)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-12)
