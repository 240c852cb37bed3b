"""Issue 24 (run integrity): the cases that ended in a traceback where one line was promised.

Bad input (an unusable run directory, a seed out of range, a config file that is not YAML, a
model no memory can hold) is one ``hpo-run: error:`` line and exit 2, before anything is written;
a run whose files cannot be written (a full disk, a file-size limit) is one line and exit 1, with
its metrics kept, no ``.partial`` file left and summary.json saying why.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hpo_cli.runner.rundir import metrics as metrics_module
from hpo_cli.runner.rundir.metrics import MetricsLog
from hpo_cli.runner.rundir.writes import RunFileNotWritten
from tests.support import tiny_runs
from tests.support.cli_runs import Result, call_main, hpo_run
from tests.support.tiny_runs import BRIEF, TINY

HPO_RUN = str(Path(sys.executable).parent / "hpo-run")


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


# ---------------------------------------------------------------- b. a full disk, a size limit
def test_a_file_size_limit_during_a_checkpoint_fails_the_run_in_one_line(tmp_path):
    """``ulimit -f``: a real process under a real limit. Python ignores SIGXFSZ, so the write
    fails with EFBIG; the run fails (exit 1) with its metrics, and no partial file, kept, and
    summary.json says why. The checkpoint of 256 hidden units (about 240 kB with Adam's
    moments) is over the limit of 64 kB, the metrics, summary and Hydra's files are under it."""
    run_dir = tmp_path / "run"
    limit = 64 * 1024

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    overrides = [*TINY, "checkpoint_every=1", "model.hidden_sizes=[256]"]
    result = subprocess.run(
        [HPO_RUN, *overrides, f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        preexec_fn=limited,
        timeout=300,
    )
    line = one_error_line(Result(result.returncode, result.stdout, result.stderr), 1)
    assert f"{run_dir / 'checkpoint.pt'} could not be written (File too large)" in line
    assert "the metrics so far are kept" in line
    assert not list(run_dir.glob("*.partial"))
    assert not (run_dir / "checkpoint.pt").exists()
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3, "the header, outer steps 0 and 1"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "could not be written (File too large)" in summary["error"]
    assert summary["final"]["outer_step"] == 1


def test_a_disk_that_refuses_the_claims_records_leaves_nothing(tmp_path, monkeypatch, capsys):
    """The claim's own records (``.hydra/``) refused by the disk: one line, exit 1 (nothing
    ran), and the claim taken back: no lock, no partial record, no folder."""
    from hpo_cli.runner.rundir import directory

    def refused(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(directory.OmegaConf, "save", refused)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit, match="1"):
        tiny_runs.run(run_dir)
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "could not be written (No space left" in errors[0]
    assert not run_dir.exists()


def full_disk(monkeypatch) -> None:
    """Every torch.save and every JSON file (summary.json, hyperparameters.json) fails half-way
    with ENOSPC, as on a full disk; metrics.csv's short rows still fit."""

    def no_space() -> OSError:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def save(state, target, *args, **kwargs):
        if hasattr(target, "write"):
            target.write(b"PK\x03\x04 half a checkpoint")
        else:
            Path(target).write_bytes(b"PK\x03\x04 half a file")
        raise no_space()

    real_write_text = Path.write_text

    def write_text(self, data, *args, **kwargs):
        if self.name.endswith(".json.partial"):
            real_write_text(self, data[: len(data) // 2])
            raise no_space()
        return real_write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(Path, "write_text", write_text)


def test_a_full_disk_that_refuses_summary_json_too_is_still_one_line(tmp_path, monkeypatch):
    full_disk(monkeypatch)
    run_dir = tmp_path / "run"
    line = one_error_line(hpo_run(run_dir, *TINY), 1)
    checkpoint, summary = run_dir / "checkpoint.pt", run_dir / "summary.json"
    assert f"{checkpoint} could not be written (No space left on device)" in line
    assert f"{summary} could not be written (No space left on device)" in line
    assert not list(run_dir.glob("*.partial")) and not summary.exists()
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 4, "header, steps 0-2"


def test_a_metrics_row_the_disk_refuses_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    log = MetricsLog(tmp_path / "metrics.csv")
    log.append({"outer_step": 0, "train_loss": 1.0})
    before = log.path.read_bytes()

    def fsync(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(metrics_module.os, "fsync", fsync)
    with pytest.raises(RunFileNotWritten, match=r"metrics\.csv could not be written"):
        log.append({"outer_step": 1, "train_loss": 0.5})
    assert log.path.read_bytes() == before


# ---------------------------------------------------------------- g. the fallback said once
def test_the_fallback_to_the_previous_checkpoint_is_said_once(tmp_path):
    """The preflight, the check that the checkpoint fits the model and the loop each load it;
    only the load the run continues from says so. A process of its own: the preflight's warning
    goes to its stderr before Hydra sets up logging (pytest would catch it in this one)."""
    run_dir = tmp_path / "run"
    assert hpo_run(run_dir, *TINY, "checkpoint_every=1").returncode == 0
    assert (run_dir / "checkpoint.previous.pt").exists()
    (run_dir / "checkpoint.pt").write_bytes(b"PK\x03\x04 cut short")
    result = subprocess.run(
        [HPO_RUN, f"resume={run_dir}", "outer_steps=6"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    said = (result.stdout + result.stderr).count("falling back to the previous checkpoint")
    assert said == 1, result.stdout + result.stderr
    assert (run_dir / "hpo-run.log").read_text().count("falling back") == 1


# ---------------------------------------------------------------- f. data.max_in_memory_bytes
def test_a_built_in_data_set_over_max_in_memory_bytes_is_refused_in_one_line(tmp_path):
    """The built-in loaders read their splits whole; they cannot be streamed, so the limit is
    not silently ignored. TINY's digits are 80 examples of 8×8 float32 pixels: 20 480 bytes."""
    run_dir = tmp_path / "run"
    line = one_error_line(hpo_run(run_dir, *TINY, "data.max_in_memory_bytes=20479"), 2)
    assert "dataset=hpo_cli.data.digits.load_digits reads its 80 examples whole" in line
    assert "(20480 bytes in float32), more than data.max_in_memory_bytes=20479" in line
    assert not (run_dir / "metrics.csv").exists()
    fits = hpo_run(tmp_path / "fits", *TINY, "data.max_in_memory_bytes=20480")
    assert fits.returncode == 0, fits.stderr


# ---------------------------------------------------------------- h. the figure and sweep scripts
def test_the_sweep_script_refuses_a_missing_folder_as_bad_input(tmp_path):
    from hpo_cli.runner.sweeps import aggregate

    result = call_main(aggregate.main, "aggregate", [str(tmp_path / "missing")])
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"python -m hpo_cli.runner.sweeps.aggregate: error: {tmp_path / 'missing'} is not a "
        "sweep directory (no such folder)"
    )


SCRIPTS = ["hpo_cli.runner.report.plots", "hpo_cli.runner.sweeps.aggregate"]


@pytest.mark.parametrize("module", SCRIPTS)
def test_the_figure_and_sweep_scripts_without_a_folder_say_their_usage(module):
    result = call_main(importlib.import_module(module).main, module, [])
    assert result.returncode == 2
    assert result.stderr.startswith(f"usage: python -m {module} ")
    assert result.stderr.count("\n") == 1


# ---------------------------------------------------------------- i. targets refused, or failing
@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["+model._target_=os.system"], "An item is already at 'model._target_'"),
        (["model._target_=builtins.open"], "model.hidden_sizes is not a parameter of builtins"),
        (["~model", "+model._target_=os.system"], "model.command is missing: os.system requires"),
    ],
)
def test_a_target_refused_on_the_command_line_is_one_line(tmp_path, overrides, needle):
    run_dir = tmp_path / "run"
    assert needle in one_error_line(hpo_run(run_dir, *BRIEF, *overrides), 2)
    assert not (run_dir / "metrics.csv").exists()


def test_a_target_that_cannot_open_its_file_is_one_line(tmp_path):
    """A target of one's own that raises an OSError (a missing file) as it is built."""
    missing = tmp_path / "missing.txt"
    overrides = ["~model", "+model._target_=builtins.open", f"+model.file={missing}"]
    line = one_error_line(hpo_run(tmp_path / "run", *BRIEF, *overrides), 2)
    assert f"model=builtins.open: [Errno 2] No such file or directory: '{missing}'" in line
