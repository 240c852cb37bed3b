"""Run integrity (issue 13): a resume never changes the run, one writer per run directory,
damaged files and bad input refused in one line with exit status 2, nothing a user wrote lost.

``hpo-run`` runs in-process (``cli.main`` with ``sys.argv`` patched) except in the lock test,
where a second process is the point.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from hpo_cli import hpo_hessian as hessian_cli
from hpo_cli.runner.cli import entry as cli
from hpo_cli.runner.cli.command import train
from hpo_cli.runner.rundir.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from hpo_cli.runner.rundir.lock import RunLocked, check_unlocked, run_lock
from hpo_cli.runner.rundir.metrics import MetricsDamaged, MetricsLog
from hpo_cli.runner.rundir.names import CHECKPOINT, LOCK, PREVIOUS_CHECKPOINT
from tests.support.cli_runs import call_main
from tests.support.composed import run_config
from tests.support.tiny_runs import tiny

TINY = tiny("model.hidden_sizes=[16]")  # not the tiny run's 8: --cfg must print the run's own


def hpo_run(*arguments: str) -> int:
    """``hpo-run ARGUMENTS`` in this process (:func:`cli_runs.call_main`); its exit status, its
    output passed on to this test's own (``capsys``)."""
    result = call_main(cli.main, "hpo-run", list(arguments))
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


def error_lines(capsys: pytest.CaptureFixture) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "error:" in line]


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """The bytes of what a user would not want changed: the saved config and the metrics."""
    names = [".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml", "metrics.csv"]
    return {name: (run_dir / name).read_bytes() for name in names}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished")
    assert hpo_run(*TINY, f"hydra.run.dir={run_dir}") == 0
    return run_dir


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


# ---------------------------------------------------------------- a resume never changes the run
@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("seed=1", "cannot change seed (0 -> 1)"),
        ("dataset.train_size=30", "cannot change dataset.train_size (20 -> 30)"),
        ("model=linear", "cannot change model (mlp -> linear)"),
        ("hyper=weight_decay", "cannot change hyper (weight_decay_per_weight -> weight_decay)"),
        ("optimizer.lr=-1", "cannot change optimizer.lr"),
        ("outer_steps=2", "outer_steps=2 is below the run's 4"),
        ("eval_every=0", "eval_every=0 is invalid"),
    ],
)
def test_a_resume_that_would_change_the_run_is_refused_and_touches_nothing(
    run_copy, capsys, override, needle
):
    before = snapshot(run_copy)
    assert hpo_run(f"resume={run_copy}", override) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and needle in lines[0], lines
    assert snapshot(run_copy) == before
    if override == "eval_every=0":  # a typo used to break every later resume of the run
        assert hpo_run(f"resume={run_copy}") == 0


def test_a_default_changed_since_the_run_started_is_named_with_the_overrides_that_keep_it(
    run_copy, capsys
):
    """A resume composes the run's own overrides with today's defaults; a default hpo-cli has
    changed since (here solver.lanczos_iterations, 10 in this install, 12 when the run started)
    is refused with the overrides that continue the run as it was, and those work."""
    saved = run_copy / ".hydra" / "config.yaml"
    saved.write_text(saved.read_text().replace("lanczos_iterations: 10", "lanczos_iterations: 12"))
    assert hpo_run(f"resume={run_copy}", "outer_steps=5") == 2
    line = error_lines(capsys)[0]
    assert "hpo-cli's defaults changed since the run started" in line
    assert line.endswith(f"hpo-run resume={run_copy} solver.lanczos_iterations=12")
    assert hpo_run(f"resume={run_copy}", "outer_steps=5", "solver.lanczos_iterations=12") == 0


def test_a_resume_may_extend_the_run_and_change_its_cadence(run_copy):
    assert hpo_run(f"resume={run_copy}", "outer_steps=6", "eval_every=2") == 0
    assert pd.read_csv(run_copy / "metrics.csv")["outer_step"].tolist() == [0, 1, 2, 3, 4, 6]
    saved = (run_copy / ".hydra" / "config.yaml").read_text()
    assert "outer_steps: 6" in saved and "eval_every: 2" in saved
    assert hpo_run(f"resume={run_copy}") == 0, "the next plain resume keeps the extension"
    assert json.loads((run_copy / "summary.json").read_text())["outer_steps"] == 6


def test_a_fresh_run_aimed_at_a_run_is_refused_before_hydra_rewrites_its_config(run_copy, capsys):
    before = snapshot(run_copy)
    assert hpo_run(*TINY, "seed=3", f"hydra.run.dir={run_copy}") == 2
    assert f"pass resume={run_copy}" in error_lines(capsys)[0]
    assert snapshot(run_copy) == before
    assert hpo_run(f"resume={run_copy}") == 0
    assert "seed=3" not in (run_copy / ".hydra" / "overrides.yaml").read_text()


def test_cfg_job_shows_a_resumed_runs_configuration_and_writes_nothing(run_copy, capsys):
    before = snapshot(run_copy)
    assert hpo_run("--cfg", "job", f"resume={run_copy}", "outer_steps=9") == 0
    printed = capsys.readouterr().out
    assert "outer_steps: 9" in printed and "- 16" in printed  # the run's model.hidden_sizes
    assert snapshot(run_copy) == before


# ---------------------------------------------------------------- exit 2 for every config error
@pytest.mark.parametrize(
    ("arguments", "needle"),
    [
        (["optimzer.lr=1"], "Key 'optimzer' not in 'RunConfig'"),
        (["outer_steps=abc"], "'abc' of type 'str' could not be converted to Integer"),
        (
            ["solver=newton"],
            "available options in 'solver': cg, exact, first_order, identity, neumann",
        ),
        (["solver=base_cg"], "solver=base_cg is an internal schema"),
        (["+foo=1"], "foo is not a top-level configuration key"),
        (["-m", "solver=neumann,newton"], "Could not find 'solver/newton'"),
        (["-m", "seed=[1"], "no viable alternative at input '[1'"),
        (["model.hidden_sizes=[-5]"], "model.hidden_sizes=[-5] is invalid"),
        (["solver=cg", "solver.max_iter=0"], "cg.max_iter must be >= 1, got 0"),
        (["max_skipped_fraction=2"], "max_skipped_fraction=2.0 is invalid"),
    ],
)
def test_every_configuration_error_is_one_line_and_exit_2(tmp_path, capsys, arguments, needle):
    run_dir = tmp_path / "new"
    status = hpo_run(*arguments, f"hydra.run.dir={run_dir}", f"hydra.sweep.dir={run_dir}")
    lines = error_lines(capsys)
    assert status == 2 and len(lines) == 1 and needle in lines[0], lines
    assert not (run_dir / "metrics.csv").exists()


# ---------------------------------------------------------------- one writer per run directory
def test_a_lock_names_its_holder_and_refuses_a_second_writer(tmp_path):
    with run_lock(tmp_path), pytest.raises(RunLocked, match=f"by process {os.getpid()}"):
        check_unlocked(tmp_path)
    check_unlocked(tmp_path)  # released on exit


def test_a_second_writer_is_refused_and_kill_9_releases_the_lock(tmp_path, capsys):
    run_dir = tmp_path / "run"
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from hpo_cli.runner import cli; cli.main()",
            *TINY,
            "outer_steps=100000",
            f"hydra.run.dir={run_dir}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 200
        while not (run_dir / "checkpoint.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert writer.poll() is None, "the writer stopped before its first checkpoint"
        before = (run_dir / ".hydra" / "config.yaml").read_bytes()
        assert hpo_run(f"resume={run_dir}") == 2
        assert f"in use by process {writer.pid}" in error_lines(capsys)[0]
        assert hpo_run(*TINY, f"hydra.run.dir={run_dir}") == 2
        assert f"in use by process {writer.pid}" in error_lines(capsys)[0]
        assert (run_dir / ".hydra" / "config.yaml").read_bytes() == before
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert (run_dir / LOCK).read_text().strip() == str(writer.pid)
    check_unlocked(run_dir)  # the dead writer's lock file needs no clean-up


# ---------------------------------------------------------------- checkpoints
def state(step: int) -> dict:
    return {"progress": {"outer_step": step}, "weights": torch.arange(4.0) * step}


def test_a_checkpoint_is_fsynced_before_its_rename_and_the_directory_after(tmp_path, monkeypatch):
    calls = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync") or fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: calls.append("replace") or replace(a, b))
    save_checkpoint(tmp_path, state(1))
    assert calls == ["fsync", "replace", "fsync"]


def test_a_damaged_checkpoint_falls_back_to_the_previous_one_saying_so(tmp_path, caplog):
    save_checkpoint(tmp_path, state(1))
    save_checkpoint(tmp_path, state(2))
    assert load_checkpoint(tmp_path)["progress"]["outer_step"] == 2
    path = tmp_path / CHECKPOINT
    path.write_bytes(path.read_bytes()[:100])  # cut short while being replaced
    assert load_checkpoint(tmp_path)["progress"]["outer_step"] == 1
    assert "falling back to the previous checkpoint" in caplog.text


@pytest.mark.parametrize("damage", ["truncate", "random"])
def test_a_checkpoint_that_cannot_be_read_is_one_line(tmp_path, damage):
    save_checkpoint(tmp_path, state(1))
    path = tmp_path / CHECKPOINT
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2] if damage == "truncate" else os.urandom(999))
    with pytest.raises(CheckpointError, match="is damaged") as caught:
        load_checkpoint(tmp_path)
    assert "\n" not in str(caught.value)


class Payload:
    """Stands for an object whose unpickling would run code."""


def test_a_checkpoint_that_needs_more_than_tensors_is_refused(tmp_path):
    torch.save({"progress": Payload()}, tmp_path / CHECKPOINT)
    with pytest.raises(CheckpointError, match="could run arbitrary code"):
        load_checkpoint(tmp_path)


def test_resume_and_hpo_hessian_refuse_a_damaged_checkpoint_in_one_line(run_copy, capsys):
    for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
        (run_copy / name).write_bytes(b"not a checkpoint")
    assert hpo_run(f"resume={run_copy}") == 2
    assert "is damaged" in error_lines(capsys)[0]
    result = call_main(
        hessian_cli.main, "hpo-hessian", [f"run_dir={run_copy}", f"hydra.run.dir={run_copy / 'h'}"]
    )
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2 and len(lines) == 1 and "is damaged" in lines[0]


# ---------------------------------------------------------------- metrics.csv
def test_metrics_cut_short_before_the_checkpoint_refuse_the_resume(run_copy, capsys):
    path = run_copy / "metrics.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2][:40] + "\n"  # outer step 1, cut mid-row
    path.write_text("".join(lines))
    assert hpo_run(f"resume={run_copy}", "outer_steps=6") == 2
    assert "line 3 is cut short" in error_lines(capsys)[0]


def test_missing_metrics_rows_refuse_the_resume(run_copy, capsys):
    path = run_copy / "metrics.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2] + lines[3:]))  # outer step 1 gone
    assert hpo_run(f"resume={run_copy}", "outer_steps=6") == 2
    assert "holds 4 rows up to outer step 4, but the run had written 5" in error_lines(capsys)[0]


def test_a_row_cut_short_after_the_checkpoint_is_recomputed(tmp_path):
    log = MetricsLog(tmp_path / "metrics.csv", ["outer_step", "value"])
    log.extend([{"outer_step": 0, "value": 1.0}, {"outer_step": 1, "value": 2.0}])
    with log.path.open("a") as handle:
        handle.write("2,3.")  # a crash during the write after the checkpoint at step 1
    assert [row["outer_step"] for row in log.checked_rows(1, expected=2)] == ["0", "1"]
    with pytest.raises(MetricsDamaged, match="line 4 is cut short"):
        log.checked_rows(1)  # without the checkpoint's count, nothing says the row is spare


# ---------------------------------------------------------------- failures and their messages
def test_a_failure_before_the_first_checkpoint_suggests_no_resume(tmp_path, capsys):
    assert hpo_run(*TINY, "solver.alpha=1000", f"hydra.run.dir={tmp_path}") == 1
    line = error_lines(capsys)[0]
    assert "neumann solver diverged" in line and "no checkpoint had been written yet" in line
    assert "resume=" not in line and "checkpoint are kept" not in line


def test_a_run_with_its_hyper_steps_skipped_fails_in_summary_and_exit_status(tmp_path, capsys):
    arguments = [*TINY, "solver.alpha=1000", "on_failure=skip", f"hydra.run.dir={tmp_path}"]
    assert hpo_run(*arguments) == 1
    assert "4 of 4 hyper-steps were skipped" in error_lines(capsys)[0]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["skipped_hyper_steps"] == 4
    assert "max_skipped_fraction" in summary["error"]


# ---------------------------------------------------------------- the default does not fail
def test_hpo_run_seed_1_completes_with_the_default_configuration(tmp_path):
    """Seeds 1, 6 and 7 used to stop at outer step 1: "term 3 outgrew the first (1.02)"."""
    arguments = ["seed=1", "outer_steps=3", "inner_steps=5", "plots=false"]
    assert hpo_run(*arguments, f"hydra.run.dir={tmp_path}") == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["skipped_hyper_steps"] == 0


@pytest.mark.parametrize(("inner_steps", "outer_steps"), [(5, 3), (50, 2)])
def test_the_default_configuration_completes_for_seeds_0_to_9(tmp_path, inner_steps, outer_steps):
    """hpo-run's default (3-term Neumann, α = 1/λ̂max) at short and default inner phases: no
    hyper-step fails or is skipped, though H is indefinite this early (``unstable`` steps)."""
    cfg = run_config(f"outer_steps={outer_steps}", f"inner_steps={inner_steps}")
    for seed in range(10):
        cfg.seed = seed
        (tmp_path / str(seed)).mkdir()
        progress = train(cfg, tmp_path / str(seed))
        assert progress.outer_step == outer_steps and progress.skipped_hyper_steps == 0


# ---------------------------------------------------------------- --help
def test_help_lists_options_without_internal_schemas_and_describes_every_key(capsys):
    assert hpo_run("--help") == 0
    text = capsys.readouterr().out
    assert "base_" not in text and "hessian_experiment" not in text
    assert "solver           cg, exact, first_order, identity, neumann*" in text
    for key in ("seed", "outer_steps", "inner_steps", "max_skipped_fraction", "plots"):
        line = next(line for line in text.splitlines() if line.strip().startswith(f"{key} "))
        assert line.split("]", 1)[1].strip(), f"{key} has no description"


def test_hpo_hessian_help_lists_only_what_it_accepts(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["hpo-hessian", "--help"])
    hessian_cli.main()
    text = capsys.readouterr().out
    assert "experiment       hessian_condition\n" in text
    groups = [line.split()[0] for line in text.splitlines() if line.startswith("  ")]
    assert "solver" not in groups and "optimizer" not in groups and "base_" not in text


def test_hpo_hessian_refuses_an_hpo_run_experiment_in_one_line(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["hpo-hessian", "experiment=ridge_closed_form"])
    with pytest.raises(SystemExit) as stop:
        hessian_cli.main()
    lines = error_lines(capsys)
    assert stop.value.code == 2 and len(lines) == 1
    assert "experiment=ridge_closed_form sets solver" in lines[0]
    assert "hpo-hessian's experiments: hessian_condition" in lines[0]
