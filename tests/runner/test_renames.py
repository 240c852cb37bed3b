"""Renamed keys and columns (``RENAMED_KEYS`` in hpo_cli.runner.cli.renames): an old key on the
command line or in a config file is one line naming the new key (exit 2, nothing written), and a
run directory written before the renames is not resumed: refused in one line, its files untouched.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from hpo_cli.runner.cli.preflight import compose_run
from hpo_cli.runner.cli.renames import RENAMED_COLUMNS, RENAMED_KEYS
from hpo_cli.runner.rundir.metrics import COLUMNS
from tests.support.cli_runs import hpo_hessian, hpo_run
from tests.support.tiny_runs import TINY

ALWAYS = "metrics.csv and summary.json are always written"


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (
            ["logger=mlflow"],
            f"logger= is now tracking.trackers=[...]: use tracking.trackers=[mlflow]; {ALWAYS}",
        ),
        (
            ["logger=[csv,tensorboard,wandb]"],
            "logger= is now tracking.trackers=[...]: use tracking.trackers=[tensorboard,wandb]; "
            f"{ALWAYS}",
        ),
        (
            ["+logger=mlflow"],
            f"logger= is now tracking.trackers=[...]: use tracking.trackers=[mlflow]; {ALWAYS}",
        ),
        (
            ["solver=unrolled", "solver.checkpoint=true"],
            "solver.checkpoint= is now solver.gradient_checkpointing=...: use "
            "solver.gradient_checkpointing=true",
        ),
        (
            ["data.train_size=100"],
            "data.train_size= is now data.split_train=...: use data.split_train=100 (the "
            "train_size of a loader's own arguments stays dataset.train_size)",
        ),
        (
            ["-m", "data.test_size=10,20"],
            "data.test_size= is now data.split_test=...: use data.split_test=10 (the "
            "test_size of a loader's own arguments stays dataset.test_size)",
        ),
    ],
)
def test_an_old_key_is_one_line_naming_the_new_one(tmp_path, overrides, line):
    result = hpo_run(tmp_path / "run", *overrides)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"hpo-run: error: {line}"]
    assert not (tmp_path / "run").exists()


def test_an_old_key_in_a_config_file_names_the_new_one(tmp_path):
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "old.yaml").write_text("# @package _global_\ndata:\n  val_size: 40\n")
    result = hpo_run(tmp_path / "run", f"--config-dir={tmp_path / 'conf'}", "experiment=old")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "hpo-run: error: data.val_size= is now data.split_val=... (the val_size of a loader's "
        "own arguments stays dataset.val_size)"
    ]


def test_hpo_hessian_names_the_new_key_too(tmp_path):
    result = hpo_hessian(tmp_path / "run", "data.train_size=5")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(
        "hpo-hessian: error: data.train_size= is now data.split_train=...: use data.split_train=5"
    )


def test_the_table_names_keys_that_exist_now_and_not_the_old_ones():
    config = compose_run(["solver=unrolled"])
    for old, new in RENAMED_KEYS.items():
        assert OmegaConf.select(config, new, default="<none>") != "<none>", new
        assert OmegaConf.select(config, old, default="<none>") == "<none>", old
    for old, new in RENAMED_COLUMNS.items():
        assert new in COLUMNS and old not in COLUMNS


# ---------------------------------------------------------------- a run directory from before
@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("renames") / "run"
    result = hpo_run(run_dir, *TINY, "data.split_test=null")
    assert result.returncode == 0, result.stderr
    return run_dir


def old_config(run_dir: Path) -> None:
    """The saved configuration as an hpo-cli before the renames wrote it: ``data.train_size``,
    ``data.val_size``, ``data.test_size`` and the top-level ``logger`` before ``tracking``."""
    path = run_dir / ".hydra" / "config.yaml"
    config = OmegaConf.to_container(OmegaConf.load(path))
    renamed = {"split_train": "train_size", "split_val": "val_size", "split_test": "test_size"}
    config["data"] = {renamed.get(k, k): v for k, v in config["data"].items()}
    trackers = config["tracking"].pop("trackers")
    old = {}
    for key, value in config.items():
        if key == "tracking":
            old["logger"] = ["csv", *trackers]
        old[key] = value
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(old)))
    overrides = run_dir / ".hydra" / "overrides.yaml"
    saved = [o.replace("data.split_test", "data.test_size") for o in OmegaConf.load(overrides)]
    overrides.write_text(OmegaConf.to_yaml(OmegaConf.create(saved)))


def old_metrics(run_dir: Path) -> None:
    path = run_dir / "metrics.csv"
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    rows[0] = ["inner_steps" if c == "total_inner_steps" else c for c in rows[0]]
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def old_checkpoints(run_dir: Path) -> None:
    for name in ("checkpoint.pt", "checkpoint.previous.pt"):
        state = torch.load(run_dir / name, weights_only=True)
        state["format"] = 2
        progress = state["progress"]
        progress["inner_steps"] = progress.pop("total_inner_steps")
        torch.save(state, run_dir / name)


def digests(run_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    ("make_old", "needle"),
    [
        (
            (old_config, old_metrics, old_checkpoints),
            "was written before hpo-cli renamed its keys (data.train_size is now "
            "data.split_train; data.val_size is now data.split_val; data.test_size is now "
            "data.split_test; logger is now tracking.trackers; metrics.csv's inner_steps is now "
            "total_inner_steps), so it cannot be continued without changing the run; start a "
            "new run with the new names (the old run's files stay readable), or finish it with "
            "the hpo-cli that wrote it",
        ),
        (
            (old_metrics,),
            "(metrics.csv's inner_steps is now total_inner_steps), so it cannot be continued",
        ),
        (
            (old_checkpoints,),
            "this checkpoint (format 2) predates hpo-cli's renamed keys and columns (inner_steps "
            "is now total_inner_steps); it cannot be resumed: start a new run, or finish it with "
            "the hpo-cli that wrote it",
        ),
    ],
    ids=["whole", "metrics only", "checkpoint only"],
)
def test_a_run_directory_from_before_the_renames_is_refused_and_untouched(
    finished, tmp_path, make_old, needle
):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    for change in make_old:
        change(run_dir)
    before = digests(run_dir)
    result = hpo_run(None, f"resume={run_dir}", "outer_steps=6")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hpo-run: error: resume={run_dir}")
    assert needle in lines[0]
    assert digests(run_dir) == before


def test_hpo_hessian_refuses_a_run_directory_from_before_the_renames(finished, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    old_config(run_dir)
    result = hpo_hessian(tmp_path / "hessian", f"run_dir={run_dir}")
    assert result.returncode == 2
    assert f"run_dir={run_dir} was written before hpo-cli renamed its keys" in result.stderr


def test_todays_run_directory_still_resumes(finished, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    result = hpo_run(None, f"resume={run_dir}", "outer_steps=6")
    assert result.returncode == 0, result.stderr
    with (run_dir / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["total_inner_steps"]) for r in rows] == [50 + 5 * k for k in range(7)]
