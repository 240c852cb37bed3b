"""Issue 24 (run integrity): the cases that ended in a traceback where one line was promised.

Bad input (an unusable run directory, a seed out of range, a config file that is not YAML, a
model no memory can hold) is one ``hpo-run: error:`` line and exit 2, before anything is written;
a run whose files cannot be written (a full disk, a file-size limit) is one line and exit 1, with
its metrics kept, no ``.partial`` file left and summary.json saying why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli_runs import Result, hpo_run
from tests.support.tiny_runs import BRIEF, TINY


def one_error_line(result: Result, code: int) -> str:
    """The one ``hpo-run: error:`` line of ``result``, which exited with ``code``, no traceback."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hpo-run: error: "), result.stderr
    return lines[0]


# ---------------------------------------------------------------- a. an unusable run directory
def a_file_as_the_run_directory(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "afile").write_text("mine\n")
    return str(tmp_path / "afile"), "afile cannot be a run directory: it is a file"


def a_file_in_its_path(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "afile").write_text("mine\n")
    return str(tmp_path / "afile" / "run"), f"{tmp_path / 'afile'} is a file"


def a_file_before_an_interpolation(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "afile").write_text("mine\n")
    return f"{tmp_path / 'afile'}/${{seed}}", "afile cannot be a run directory: it is a file"


@pytest.mark.parametrize(
    "case", [a_file_as_the_run_directory, a_file_in_its_path, a_file_before_an_interpolation]
)
def test_a_run_directory_that_cannot_be_one_is_refused_in_one_line(tmp_path, case):
    run_dir, needle = case(tmp_path)
    line = one_error_line(hpo_run(Path(run_dir), *BRIEF), 2)
    assert needle in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert (tmp_path / "afile").read_text() == "mine\n"


def test_a_run_directory_that_cannot_be_created_is_refused_in_one_line():
    """``/proc`` takes no folders, even from root."""
    if not Path("/proc/self").exists():
        pytest.skip("no /proc here")
    line = one_error_line(hpo_run(Path("/proc/hpo-run-test"), *BRIEF), 2)
    assert "/proc/hpo-run-test cannot be a run directory: " in line and "cannot be created" in line


def test_a_sweep_directory_under_a_file_is_refused_in_one_line(tmp_path):
    (tmp_path / "afile").write_text("mine\n")
    sweep = f"hydra.sweep.dir={tmp_path / 'afile' / 'sweep'}"
    line = one_error_line(hpo_run(None, "-m", "seed=0,1", *BRIEF, sweep), 2)
    assert f"{tmp_path / 'afile'} is a file" in line


# ---------------------------------------------------------------- c. no memory can hold the model
def test_a_model_that_no_memory_can_hold_is_refused_in_one_line(tmp_path):
    """10¹³ hidden units of 64 inputs are 2.6 PB of float32: beyond any address space, so the
    allocation fails whatever the machine's overcommit policy."""
    run_dir = tmp_path / "run"
    line = one_error_line(hpo_run(run_dir, *BRIEF, "model.hidden_sizes=[10000000000000]"), 2)
    assert "model=hpo_cli.models.mlp.MLP needs more memory than there is" in line
    assert "GB failed" in line
    assert not (run_dir / "metrics.csv").exists()


# ---------------------------------------------------------------- d. seeds out of range
@pytest.mark.parametrize("seed", ["-1", str(2**63), "99999999999999999999999"])
def test_a_seed_out_of_range_is_refused_before_anything_is_written(tmp_path, seed):
    run_dir = tmp_path / "run"
    line = one_error_line(hpo_run(run_dir, *BRIEF, f"seed={seed}"), 2)
    assert f"seed={seed} is invalid" in line
    assert not run_dir.exists()


# ---------------------------------------------------------------- e. a config file not YAML
def test_a_config_file_of_ones_own_that_is_not_yaml_is_named_in_one_line(tmp_path):
    (tmp_path / "conf" / "model").mkdir(parents=True)
    bad = tmp_path / "conf" / "model" / "bad.yaml"
    bad.write_text("hidden_sizes: [8\nactivation: : relu\n")
    run_dir = tmp_path / "run"
    line = one_error_line(
        hpo_run(run_dir, *BRIEF, "--config-dir", str(tmp_path / "conf"), "model=bad"), 2
    )
    assert f"{bad} is not valid YAML at line 2" in line
    assert not run_dir.exists()


def test_a_config_file_that_is_not_yaml_stops_no_run_that_does_not_use_it(tmp_path):
    """Hydra lists a group's files but reads only the ones a run picks."""
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "bad.yaml").write_text("hidden_sizes: [8\n")
    run_dir = tmp_path / "run"
    result = hpo_run(run_dir, *TINY, "--config-dir", str(tmp_path / "conf"))
    assert result.returncode == 0, result.stderr
    assert (run_dir / "summary.json").exists()
