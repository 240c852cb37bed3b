"""A run claims its directory before it writes there (``RunDirectory.claimed``): no command can
change another run, a sweep's jobs, a ``${seed}`` directory and two launches at once included,
and a command refused before training writes nothing at all (no ``.hydra/``, log or lock)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from hpo_cli.runner.cli import command as cli
from hpo_cli.runner.cli import entry
from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.rundir.directory import RunDirectory
from hpo_cli.runner.rundir.lock import run_lock
from tests.support import tiny_runs
from tests.support.cli_runs import call_main
from tests.support.tiny_runs import TINY

pytestmark = pytest.mark.xdist_group("claim")


def everything(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes (the lock and the log included)."""
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def hpo_run(*arguments: str) -> tuple[int, list[str]]:
    """``hpo-run ARGUMENTS`` in this process: its exit status and its error lines."""
    result = call_main(entry.main, "hpo-run", list(arguments))
    return result.returncode, [line for line in result.stderr.splitlines() if "error" in line]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A finished sweep of two tiny jobs (seeds 0 and 1) in a sweep directory of its own."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "S"
    code, errors = hpo_run("-m", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep_dir}")
    assert code == 0, errors
    return sweep_dir


def test_a_sweep_into_another_sweeps_directory_is_refused_and_changes_nothing(sweep):
    """The worst defect of last round: ``-m seed=7,8`` into a finished sweep's directory rewrote
    job 0's ``.hydra/config.yaml`` (seed 7) before the job refused the folder, and the next
    resume continued under it."""
    before = everything(sweep)
    code, errors = hpo_run("-m", "seed=7,8", *TINY, f"hydra.sweep.dir={sweep}")
    assert code == 2
    assert len(errors) == 1 and "already holds another sweep (seed=0,1" in errors[0]
    assert everything(sweep) == before
    assert "seed: 0" in (sweep / "0" / ".hydra" / "config.yaml").read_text()


def test_the_same_sweep_again_leaves_its_finished_jobs_as_they_were(sweep):
    jobs = {job: everything(sweep / job) for job in ("0", "1")}
    hpo_run("-m", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}")  # each job: refused, its run kept
    assert {job: everything(sweep / job) for job in ("0", "1")} == jobs


def test_an_interpolated_run_directory_is_claimed_once(tmp_path):
    """``hydra.run.dir=D/${seed}`` cannot be checked before Hydra resolves it; the job's claim
    refuses the second run into it, with the first run's files untouched."""
    pattern = f"hydra.run.dir={tmp_path}/${{seed}}"
    assert hpo_run(*TINY, "seed=5", pattern)[0] == 0
    before = everything(tmp_path / "5")
    code, errors = hpo_run(*TINY, "seed=5", "optimizer.lr=0.5", pattern)
    assert code == 2 and len(errors) == 1 and "already holds a run" in errors[0]
    assert everything(tmp_path / "5") == before


def test_a_directory_held_by_another_process_is_refused_without_a_write(tmp_path):
    """The lock is taken before anything is written: a second run into a directory another
    process holds is refused, and neither ``.hydra/`` nor a log appears there; once the holder's
    claim is there (its saved configuration, before any metrics row), a fresh run is refused
    too."""
    run_dir = tmp_path / "run"
    with run_lock(run_dir):
        before = everything(run_dir)
        with pytest.raises(SystemExit, match="2"):
            tiny_runs.run(run_dir)
        assert everything(run_dir) == before and not (run_dir / ".hydra" / "config.yaml").exists()
    files = RunDirectory(run_dir)
    with files.claimed(tiny_runs.config(), [], fresh=True):
        pass
    with pytest.raises(SystemExit, match="2"):
        tiny_runs.run(run_dir, "seed=3")
    assert "seed: 0" in files.saved_config.read_text()


def test_errors_found_while_building_write_nothing(tmp_path):
    """A configuration that passes validation but cannot be built (a ``_target_`` that does not
    exist) is refused before the claim: the directory is not even made."""
    run_dir = tmp_path / "run"
    cfg = tiny_runs.config("model._target_=hpo_cli.models.mlp.NoSuchNet")
    with pytest.raises(SystemExit, match="2"):
        cli.execute(cfg, run_dir, [], multirun=False)
    assert not run_dir.exists()


def test_a_tracker_refused_after_the_claim_takes_the_claim_back(tmp_path, monkeypatch):
    """What is refused after the claim but before training (a tracker that cannot be used)
    leaves the directory as it found it: a new one removed, an existing one's files kept."""

    def unusable(*args: object) -> None:
        raise ConfigError("tracking.trackers=[mlflow]: the server does not answer")

    monkeypatch.setattr(cli, "trackers_for", unusable)
    run_dir = tmp_path / "new"
    with pytest.raises(SystemExit, match="2"):
        cli.execute(tiny_runs.config(), run_dir, [], multirun=False)
    assert not run_dir.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="2"):
        cli.execute(tiny_runs.config(), kept, [], multirun=False)
    assert everything(kept) == {"notes.txt": b"mine"}


def test_a_refused_resume_writes_nothing(tmp_path):
    """A checkpoint that does not fit the resumed model is found before the claim: the run's
    log, lock and records stay byte for byte."""
    run_dir = tmp_path / "run"
    assert math.isfinite(tiny_runs.run(run_dir))
    before = everything(run_dir)
    cfg = tiny_runs.config("model.hidden_sizes=[16]", f"resume={run_dir}")
    with pytest.raises(SystemExit, match="2"):
        cli.execute(cfg, run_dir, ["model.hidden_sizes=[16]"], multirun=False)
    assert everything(run_dir) == before


@pytest.mark.slow
def test_two_launches_into_one_directory_at_once_leave_one_run(tmp_path):
    """Two real processes started together into one explicit directory: one runs, the other is
    refused in one line (exit 2), and the saved configuration is the winner's."""
    run_dir = tmp_path / "run"
    launch = "import sys; from hpo_cli.runner.cli import main; sys.exit(main())"
    processes = {
        seed: subprocess.Popen(
            [sys.executable, "-c", launch, *TINY, f"seed={seed}", f"hydra.run.dir={run_dir}"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    }
    codes = {seed: process.wait(timeout=300) for seed, process in processes.items()}
    assert sorted(codes.values()) == [0, 2], codes
    winner = next(seed for seed, code in codes.items() if code == 0)
    loser = next(seed for seed, code in codes.items() if code == 2)
    assert len(processes[loser].stderr.read().strip().splitlines()) == 1
    assert f"seed: {winner}" in (run_dir / ".hydra" / "config.yaml").read_text()


def test_a_resume_keeps_the_runs_record_of_how_it_was_started(tmp_path):
    """Hydra's record (``.hydra/hydra.yaml``: choices, search path, the command's Hydra keys) is
    the fresh run's; a resume rewrites only the configuration and overrides it continues with."""
    run_dir = tmp_path / "run"
    assert hpo_run(*TINY, f"hydra.run.dir={run_dir}")[0] == 0
    record = (run_dir / ".hydra" / "hydra.yaml").read_bytes()
    assert hpo_run(f"resume={run_dir}", "outer_steps=5")[0] == 0
    assert (run_dir / ".hydra" / "hydra.yaml").read_bytes() == record
    assert "outer_steps: 5" in (run_dir / ".hydra" / "config.yaml").read_text()
