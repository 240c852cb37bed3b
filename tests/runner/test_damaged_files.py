"""Damaged run files (issue 24): each is refused in one line naming the file, exit 2, by the run
directory's owner (:class:`hpo_cli.runner.rundir.directory.RunDirectory`), and nothing in the
run directory changes.

Every damaged file is built for real: a tiny run of ``hpo-run``, then one of its files damaged.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from hpo_cli import hpo_hessian as hessian_cli
from tests.support.cli_runs import Result, call_main, hpo_run
from tests.support.tiny_runs import TINY, tiny


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = hpo_run(run_dir, *TINY)
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def hashes(run_dir: Path) -> dict[str, str]:
    """Every file of the run directory, by its path, with the hash of its bytes."""
    return {
        str(path.relative_to(run_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(run_dir.rglob("*"))
        if path.is_file()
    }


def resume(run_dir: Path) -> Result:
    return hpo_run(None, f"resume={run_dir}", "outer_steps=6")


def hessian(run_dir: Path) -> Result:
    out = run_dir.parent / "hessian"
    arguments = [f"run_dir={run_dir}", f"hydra.run.dir={out}"]
    return call_main(hessian_cli.main, "hpo-hessian", arguments)


def assert_refused(result: Result, damaged: Path, needle: str) -> str:
    """Exit 2, exactly one ``error:`` line, naming ``damaged`` and holding ``needle``; no
    traceback."""
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, result.stderr
    assert str(damaged) in lines[0] and needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


def write(name: str, text: str) -> Callable[[Path], Path]:
    def damage(run_dir: Path) -> Path:
        (run_dir / name).write_text(text)
        return run_dir / name

    return damage


def remove(name: str) -> Callable[[Path], Path]:
    def damage(run_dir: Path) -> Path:
        (run_dir / name).unlink()
        return run_dir / name

    return damage


HYDRA_FILES = {
    "config not YAML": (write(".hydra/config.yaml", "seed: [\n"), "not valid YAML at line 2"),
    "config a list": (write(".hydra/config.yaml", "- 1\n"), "run's configuration"),
    "config empty": (write(".hydra/config.yaml", ""), "run's configuration"),
    "overrides not YAML": (write(".hydra/overrides.yaml", "[a\n"), "not valid YAML"),
    "overrides a mapping": (write(".hydra/overrides.yaml", "a: 1\n"), "list of overrides"),
    "hydra.yaml missing": (remove(".hydra/hydra.yaml"), "is missing"),
    "hydra.yaml not Hydra's": (write(".hydra/hydra.yaml", "x: 1\n"), "Hydra's record of the run"),
}


@pytest.mark.parametrize("case", list(HYDRA_FILES))
def test_a_damaged_hydra_file_refuses_the_resume_in_one_line(run_copy, case):
    damage, needle = HYDRA_FILES[case]
    damaged = damage(run_copy)
    before = hashes(run_copy)
    assert_refused(resume(run_copy), damaged, needle)
    assert hashes(run_copy) == before


@pytest.mark.parametrize(
    "case", ["config not YAML", "config a list", "overrides not YAML", "overrides a mapping"]
)
def test_a_damaged_hydra_file_refuses_hpo_hessian_in_one_line(run_copy, case):
    damage, needle = HYDRA_FILES[case]
    damaged = damage(run_copy)
    before = hashes(run_copy)
    assert_refused(hessian(run_copy), damaged, needle)
    assert hashes(run_copy) == before


def test_a_run_whose_directory_interpolates_the_seed_can_be_resumed(tmp_path):
    """``hydra.run.dir=.../${seed}`` is saved unresolved in ``.hydra/hydra.yaml``; the resume
    reads it as written instead of resolving it outside the run's configuration."""
    result = hpo_run(None, *TINY, f"hydra.run.dir={tmp_path}/${{seed}}")
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "0"
    result = resume(run_dir)
    assert result.returncode == 0, result.stderr
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == [str(step) for step in range(7)]


def add_column(header: bool) -> Callable[[Path], Path]:
    """Every row of metrics.csv one field longer (and its header one column, with ``header``)."""

    def damage(run_dir: Path) -> Path:
        path = run_dir / "metrics.csv"
        first, *rows = path.read_text().splitlines()
        first = f"{first},extra" if header else first
        path.write_text("\n".join([first, *(f"{row},1" for row in rows)]) + "\n")
        return path

    return damage


@pytest.mark.parametrize(
    ("header", "needle"),
    [(True, "damaged header (unknown columns extra)"), (False, "line 2 is damaged (26 of 25")],
)
def test_metrics_with_an_extra_column_refuse_the_resume_and_leave_no_partial(
    run_copy, header, needle
):
    damaged = add_column(header)(run_copy)
    before = hashes(run_copy)
    assert_refused(resume(run_copy), damaged, needle)
    assert hashes(run_copy) == before
    assert not list(run_copy.glob("*.partial"))


@pytest.mark.parametrize(
    ("text", "needle"),
    [("{", "not valid JSON: Expecting property name"), ("[1]", "one object per tracker")],
)
def test_a_damaged_tracking_json_refuses_the_resume_without_trackers(run_copy, text, needle):
    damaged = write("tracking.json", text)(run_copy)
    before = hashes(run_copy)
    assert_refused(resume(run_copy), damaged, needle)
    assert hashes(run_copy) == before


@pytest.fixture(scope="module")
def wider(tmp_path_factory) -> Path:
    """A tiny run of another architecture (16 hidden units, not 8)."""
    run_dir = tmp_path_factory.mktemp("wider") / "run"
    result = hpo_run(run_dir, *tiny("model.hidden_sizes=[16]"))
    assert result.returncode == 0, result.stderr
    return run_dir


def empty_checkpoints(run_dir: Path, wider: Path) -> Path:
    for name in ("checkpoint.pt", "checkpoint.previous.pt"):
        torch.save({}, run_dir / name)
    return run_dir / "checkpoint.pt"


def foreign_checkpoints(run_dir: Path, wider: Path) -> Path:
    for name in ("checkpoint.pt", "checkpoint.previous.pt"):
        shutil.copyfile(wider / name, run_dir / name)
    return run_dir / "checkpoint.pt"


CHECKPOINTS = {
    "empty": (empty_checkpoints, "is not an hpo-run checkpoint (it lacks model, hyper"),
    "another architecture": (foreign_checkpoints, "does not fit this run's model ("),
}


@pytest.mark.parametrize("case", list(CHECKPOINTS))
@pytest.mark.parametrize("program", [resume, hessian])
def test_a_checkpoint_of_nothing_or_of_another_architecture_is_one_line(
    run_copy, wider, case, program
):
    damage, needle = CHECKPOINTS[case]
    damaged = damage(run_copy, wider)
    before = hashes(run_copy)
    assert_refused(program(run_copy), damaged, needle)
    after = hashes(run_copy)
    if case == "another architecture" and program is resume:
        # the weights are checked against the model as the run starts: Hydra's log has the line
        before.pop("hpo-run.log"), after.pop("hpo-run.log")
    assert after == before


# ---------------------------------------------------------------- the report and sweep modules
def plots(run_dir: Path) -> Result:
    from hpo_cli.runner.report import plots as report

    return call_main(report.main, "plots", [str(run_dir)])


def emptied(run_dir: Path) -> Path:
    shutil.rmtree(run_dir)
    run_dir.mkdir()
    return run_dir / "metrics.csv"


def header_only(run_dir: Path) -> Path:
    path = run_dir / "metrics.csv"
    path.write_text(path.read_text().splitlines()[0] + "\n")
    return path


PLOT_DAMAGES = {
    "missing folder": (lambda d: shutil.rmtree(d) or d, "is not a run directory"),
    "empty folder": (emptied, "is missing"),
    "empty csv": (write("metrics.csv", ""), "is empty"),
    "header-only csv": (header_only, "holds no rows"),
    "bad summary.json": (write("summary.json", '{"status": '), "not valid JSON"),
}


@pytest.mark.parametrize("case", list(PLOT_DAMAGES))
def test_plots_of_a_damaged_run_is_one_line(run_copy, case):
    damage, needle = PLOT_DAMAGES[case]
    damaged = damage(run_copy)
    before = hashes(run_copy) if run_copy.exists() else {}
    assert_refused(plots(run_copy), damaged, needle)
    assert (hashes(run_copy) if run_copy.exists() else {}) == before


def test_aggregate_of_a_sweep_with_a_bad_job_summary_is_one_line(tmp_path):
    from hpo_cli.runner.sweeps import aggregate

    sweep_dir = tmp_path / "sweep"
    result = hpo_run(None, "-m", *tiny("outer_steps=2"), "seed=0,1", f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr
    damaged = write("summary.json", "[")(sweep_dir / "1")
    before = hashes(sweep_dir)
    result = call_main(aggregate.main, "aggregate", [str(sweep_dir)])
    assert_refused(result, damaged, "not valid JSON")
    assert hashes(sweep_dir) == before
