"""``hpo-run -m`` sweeps with Hydra's basic, joblib, submitit (local mode) and Ray launchers (the
last two in the slow group, Ray on loopback only), the SLURM launcher config, their aggregation
into sweep.csv, the ranking of sweep_summary.csv (printed too) and mean ± std plots (by the
callback and by ``python -m hpo_cli.runner.sweeps.aggregate``), and a sweep in which a job fails.
The ranking itself, from hand-made jobs, is in test_sweep_ranking.py."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from hpo_cli.runner.cli import command as cli
from hpo_cli.runner.config.schemas import register_configs
from hpo_cli.runner.sweeps import aggregate as sweep_module
from hpo_cli.runner.sweeps.aggregate import aggregate, collect
from tests.support.cli_runs import Result, hpo_run
from tests.support.composed import run_config
from tests.support.tiny_runs import tiny

HPO_RUN = str(Path(sys.executable).parent / "hpo-run")
RAY = str(Path(sys.executable).parent / "ray")
CLUSTER_EXTRA = 'needs the cluster extra: pip install -e ".[cluster]" (make test-slow does)'
# Ray's single-machine mode: every Ray process listens on and talks to 127.0.0.1 only (otherwise
# Ray binds to all interfaces and looks up this machine's outward address); no usage reports.
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}
TINY = tiny("outer_steps=3")
SWEEP = ["solver=neumann,identity", "seed=0,1"]


def run_sweep(
    sweep_dir: Path, *overrides: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str] | Result:
    """``hpo-run -m``: in this process (:mod:`cli_runs`), or, with ``env`` (the Ray launchers),
    as a console script in a separate process with that environment."""
    if env is None:
        return hpo_run(None, "-m", *overrides, *TINY, f"hydra.sweep.dir={sweep_dir}")
    environment = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    return subprocess.run(
        [HPO_RUN, "-m", *overrides, *TINY, f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True,
        text=True,
        timeout=240,
        env={**environment, **(env or {})},
    )


def sweep(sweep_dir: Path, *overrides: str, env: dict[str, str] | None = None) -> Path:
    result = run_sweep(sweep_dir, *overrides, env=env)
    assert result.returncode == 0, result.stderr
    return sweep_dir


def assert_same_runs(seed_0_sweep: Path, basic_sweep: Path) -> None:
    """The seed-0 jobs of ``basic_sweep`` and ``seed_0_sweep`` wrote the same metrics."""
    other, basic = (
        pd.read_csv(d / "sweep.csv").drop(columns=["job", "wall_time_s"])
        for d in (seed_0_sweep, basic_sweep)
    )
    assert set(other["setting"]) == {"solver=neumann", "solver=identity"}
    basic = basic[basic["seed"] == 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(basic, other)


@pytest.fixture(scope="module")
def basic_sweep_output(tmp_path_factory) -> tuple[Path, str]:
    """The basic launcher's sweep and what the multirun printed."""
    sweep_dir = tmp_path_factory.mktemp("basic") / "sweep"
    result = run_sweep(sweep_dir, *SWEEP)
    assert result.returncode == 0, result.stderr
    return sweep_dir, result.stdout


@pytest.fixture(scope="module")
def basic_sweep(basic_sweep_output) -> Path:
    return basic_sweep_output[0]


@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory) -> Path:
    launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    return sweep(tmp_path_factory.mktemp("joblib") / "sweep", *launcher, *SWEEP)


def test_the_callback_collects_every_job(basic_sweep):
    table = pd.read_csv(basic_sweep / "sweep.csv")
    assert sorted(table["job"].unique()) == [0, 1, 2, 3]
    assert set(table["setting"]) == {"solver=neumann", "solver=identity"}
    assert table.groupby("setting")["seed"].unique().map(sorted).tolist() == [[0, 1], [0, 1]]
    assert table.groupby("job").size().tolist() == [4, 4, 4, 4]  # outer steps 0..3
    for name in ("sweep.png", "sweep.pdf"):
        assert (basic_sweep / name).stat().st_size > 1000


def test_every_job_completes_in_its_own_folder(basic_sweep):
    jobs = sorted(p for p in basic_sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [job.name for job in jobs] == ["0", "1", "2", "3"]
    statuses = {json.loads((job / "summary.json").read_text())["status"] for job in jobs}
    assert statuses == {"completed"}


def test_the_summary_ranks_the_settings_by_the_jobs_best_rows(basic_sweep_output):
    basic_sweep, stdout = basic_sweep_output
    summary = pd.read_csv(basic_sweep / "sweep_summary.csv").set_index("setting")
    best: dict[str, list[float]] = {}
    for job_dir in sorted(p for p in basic_sweep.iterdir() if p.is_dir()):
        content = json.loads((job_dir / "summary.json").read_text())
        solver = next(o for o in content["overrides"] if o.startswith("solver="))
        best.setdefault(solver, []).append(content["best_by_validation"]["test_loss"])
    for setting, values in best.items():
        assert (summary.loc[setting, "seeds"], summary.loc[setting, "failed"]) == (2, 0)
        assert summary.loc[setting, "test_loss_mean"] == pytest.approx(sum(values) / 2)
        assert summary.loc[setting, "test_loss_std"] == pytest.approx(
            abs(values[0] - values[1]) / 2**0.5
        )
    assert summary["rank"].tolist() == [1, 2]
    means = summary[["val_error_mean", "val_loss_mean"]].apply(tuple, axis=1).tolist()
    assert means == sorted(means)
    # the multirun printed the same ranking and named the first setting
    lines = stdout.splitlines()
    start = lines.index(
        "sweep ranking: 2 settings by each job's best validation row, mean ± std over seeds "
        f"(in {basic_sweep}/sweep_summary.csv)"
    )
    winner = summary.index[0]
    assert lines[start + 2].split()[:4] == ["1", winner, "2", "0"]
    assert lines[start + 4].startswith(
        f"best: {winner} — val error {summary.loc[winner, 'val_error_mean']:.3f} ± "
    )
    assert " over 2 seeds (val loss " in lines[start + 4]


@pytest.mark.slow  # a launcher end to end, like submitit's and Ray's
def test_the_joblib_launcher_gives_the_same_sweep(basic_sweep, joblib_sweep):
    basic, joblib = (
        pd.read_csv(d / "sweep.csv").drop(columns="wall_time_s")
        for d in (basic_sweep, joblib_sweep)
    )
    pd.testing.assert_frame_equal(basic, joblib)


def test_the_script_reaggregates_from_files_alone(basic_sweep, tmp_path, monkeypatch):
    copy = tmp_path / "sweep"
    shutil.copytree(basic_sweep, copy)
    for name in ("sweep.csv", "sweep_summary.csv", "sweep.png"):
        (copy / name).unlink()
    monkeypatch.setattr(sys, "argv", ["hpo_cli.runner.sweeps.aggregate", str(copy)])
    with pytest.raises(SystemExit) as exit_info:
        sweep_module.main()
    assert exit_info.value.code == 0
    pd.testing.assert_frame_equal(
        pd.read_csv(copy / "sweep.csv"), pd.read_csv(basic_sweep / "sweep.csv")
    )
    assert (copy / "sweep.png").exists()


def test_a_sweep_without_metrics_is_refused(tmp_path):
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    with pytest.raises(ValueError, match="no job"):
        collect(tmp_path)
    with pytest.raises(ValueError, match="no job"):
        aggregate(tmp_path)


def test_the_slurm_launcher_config_extends_submitit():
    register_configs()
    with initialize_config_module("hpo_cli.conf", version_base="1.3"):
        overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"]
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1
    assert launcher.timeout_min == 60


def test_the_ray_launcher_config_joins_a_running_cluster():
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason=CLUSTER_EXTRA)
    register_configs()
    with initialize_config_module("hpo_cli.conf", version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=ray_cluster"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("ray_launcher.RayLauncher")
    assert launcher.ray.init.address == "auto" and launcher.ray.remote.num_cpus == 1
    # present and null, or hydra-ray-launcher sets 75 MB, which ray.init refuses when joining
    assert (
        "object_store_memory" in launcher.ray.init and launcher.ray.init.object_store_memory is None
    )


@pytest.mark.slow
def test_the_submitit_local_launcher_gives_the_same_runs(basic_sweep, tmp_path):
    sweep(tmp_path / "sweep", "hydra/launcher=submitit_local", SWEEP[0], "seed=0")
    assert_same_runs(tmp_path / "sweep", basic_sweep)


# ---------------------------------------------------------------- a failing job
def tiny_config(*overrides: str) -> DictConfig:
    return run_config(*TINY, *overrides)


def test_a_run_returns_its_final_validation_loss(tmp_path):
    value = cli.execute(tiny_config(), tmp_path, [], multirun=False)
    assert value == pytest.approx(pd.read_csv(tmp_path / "metrics.csv")["val_loss"].iloc[-1])


def test_a_refused_job_of_a_multirun_records_its_error_and_returns_nan(tmp_path):
    cfg = tiny_config("optimizer.lr=-1")
    (tmp_path / "job").mkdir()  # Hydra makes the job's folder before the job starts
    assert math.isnan(cli.execute(cfg, tmp_path / "job", ["optimizer.lr=-1"], multirun=True))
    summary = json.loads((tmp_path / "job" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"] == "optimizer.lr=-1.0 is invalid: must be > 0"
    with pytest.raises(SystemExit) as exit_info:  # a single run exits at once
        cli.execute(cfg, tmp_path / "run", ["optimizer.lr=-1"], multirun=False)
    assert exit_info.value.code == 2 and not (tmp_path / "run").exists()


def test_an_unexpected_error_in_a_job_of_a_multirun_is_recorded(tmp_path, monkeypatch):
    def broken(
        cfg: DictConfig,
        run_dir: Path,
        trackers: object = None,
        stop: object = None,
        experiment: object = None,
    ) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "train", broken)
    assert math.isnan(cli.execute(tiny_config(), tmp_path, [], multirun=True))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "RuntimeError: a bug"
    with pytest.raises(RuntimeError, match="a bug"):  # a single run shows the traceback
        cli.execute(tiny_config(), tmp_path / "single", [], multirun=False)


def test_a_failing_job_leaves_the_others_running_and_is_named(tmp_path):
    """Job 1 diverges (Adam with a step of 1e30: the training loss is NaN at outer step 1); job 0
    completes, the aggregation runs, names job 1, and the multirun exits with status 1."""
    result = run_sweep(tmp_path, "optimizer.lr=0.001,1e30")
    assert result.returncode == 1, result.stderr
    message = [line for line in result.stderr.splitlines() if "hpo-run: error:" in line]
    assert message == [
        f"hpo-run: error: 1 of 2 jobs did not complete (listed in {tmp_path}/sweep_failures.csv):"
    ]
    assert "job 1 (optimizer.lr=1e+30): failed: outer step 1: the training loss is nan" in (
        result.stderr
    )
    statuses = [json.loads((tmp_path / job / "summary.json").read_text())["status"] for job in "01"]
    assert statuses == ["completed", "failed"]
    failures = pd.read_csv(tmp_path / "sweep_failures.csv", dtype=str)
    assert failures.to_dict("records") == [
        {
            "job": "1",
            "status": "failed",
            "overrides": "optimizer.lr=1e+30",
            "error": "outer step 1: the training loss is nan",
        }
    ]
    table = pd.read_csv(tmp_path / "sweep.csv")
    assert table.groupby("job")["status"].first().to_dict() == {0: "completed", 1: "failed"}
    summary = pd.read_csv(tmp_path / "sweep_summary.csv")
    assert summary[["setting", "seeds", "failed"]].values.tolist() == [
        ["optimizer.lr=0.001", 1, 0],
        ["optimizer.lr=1e+30", 0, 1],
    ]
    assert pd.isna(summary["rank"].iloc[1]) and pd.isna(summary["val_loss_mean"].iloc[1])
    best = json.loads((tmp_path / "0" / "summary.json").read_text())["best_by_validation"]
    assert summary["val_loss_mean"].iloc[0] == pytest.approx(best["val_loss"])
    assert "best: optimizer.lr=0.001 — val error " in result.stdout


def test_the_script_names_failed_and_unfinished_jobs(basic_sweep, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "sweep"
    shutil.copytree(basic_sweep, copy)
    summary = json.loads((copy / "2" / "summary.json").read_text())
    summary.update(status="failed", error="outer step 3: the neumann solver diverged\nmore")
    (copy / "2" / "summary.json").write_text(json.dumps(summary))
    (copy / "3" / "summary.json").unlink()  # killed before it wrote one
    monkeypatch.setattr(sys, "argv", ["hpo_cli.runner.sweeps.aggregate", str(copy)])
    with pytest.raises(SystemExit) as exit_info:
        sweep_module.main()
    assert exit_info.value.code == 1
    stderr = capsys.readouterr().err.splitlines()
    assert stderr[:2] == [
        "failed:",
        f"2 of 4 jobs did not complete (listed in {copy}/sweep_failures.csv):",
    ]
    assert stderr[2] == (
        "  job 2 (seed=0 solver=identity): failed: outer step 3: the neumann solver diverged"
    )
    assert stderr[3].startswith("  job 3 (seed=1 solver=identity): unfinished: no summary.json")
    summary_table = pd.read_csv(copy / "sweep_summary.csv").set_index("setting")
    assert summary_table["seeds"].to_dict() == {"solver=neumann": 2, "solver=identity": 0}
    assert summary_table["failed"].to_dict() == {"solver=neumann": 0, "solver=identity": 2}
    assert set(pd.read_csv(copy / "sweep.csv")["status"]) == {"completed", "failed", "unfinished"}


def test_a_sweep_of_only_failed_jobs_still_names_them(tmp_path, monkeypatch, capsys):
    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- optimizer.lr=-1\n")
    error = "optimizer.lr=-1.0 is invalid: must be > 0"
    (job / "summary.json").write_text(json.dumps({"status": "failed", "error": error}))
    monkeypatch.setattr(sys, "argv", ["hpo_cli.runner.sweeps.aggregate", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        sweep_module.main()
    assert exit_info.value.code == 1
    stderr = capsys.readouterr().err
    assert f"no job under {tmp_path} has written metrics.csv" in stderr
    assert f"job 0 (optimizer.lr=-1): failed: {error}" in stderr
    assert pd.read_csv(tmp_path / "sweep_failures.csv")["job"].tolist() == [0]


# ---------------------------------------------------------------- Ray, on loopback only
def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def ray_processes(temp_dir: Path) -> list[int]:
    """Pids of the processes whose command line names ``temp_dir`` (Ray's own processes)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and bytes(temp_dir) in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def wait_until_gone(temp_dir: Path, timeout_s: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (left := ray_processes(temp_dir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


@pytest.fixture
def ray_temp_dir() -> Iterator[Path]:
    """Ray's session folder, short (Unix socket paths are limited to 107 bytes) and private."""
    pytest.importorskip("ray", reason=CLUSTER_EXTRA)
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason=CLUSTER_EXTRA)
    path = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ray_head(ray_temp_dir) -> Iterator[str]:
    """A running Ray cluster: ``ray start --head --block`` on 127.0.0.1, ended by its pid."""
    gcs, client, agent = free_ports(3)
    log_path = ray_temp_dir / "head.log"
    command = [
        RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
        f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
        "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
        f"--temp-dir={ray_temp_dir}",
    ]  # fmt: skip
    with log_path.open("w") as log:
        head = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **RAY_ENV})  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log_path.read_text():
            assert head.poll() is None, f"ray start failed:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "ray start did not start in 120 s"
            time.sleep(0.5)
        yield f"127.0.0.1:{gcs}"
    finally:
        head.terminate()  # ray start --block stops the node's processes on SIGTERM
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        left = wait_until_gone(ray_temp_dir)
        for pid in left:  # this head's own processes, found by its private folder
            os.kill(pid, signal.SIGKILL)
        assert not left, f"the Ray head left processes {left} running"


@pytest.mark.slow
def test_the_ray_launcher_gives_the_same_runs_on_a_local_instance(
    basic_sweep, ray_temp_dir, tmp_path
):
    """The launcher starts a private Ray instance (address=local) and stops it at exit."""
    local = [
        "hydra/launcher=ray_cluster",
        "hydra.launcher.ray.init.address=local",
        "+hydra.launcher.ray.init.num_cpus=2",
        "hydra.launcher.ray.init.object_store_memory=78643200",  # 75 MB: a small machine
        f"+hydra.launcher.ray.init._temp_dir={ray_temp_dir}",
    ]
    sweep(tmp_path / "sweep", *local, SWEEP[0], "seed=0", env=RAY_ENV)
    assert_same_runs(tmp_path / "sweep", basic_sweep)
    assert any(ray_temp_dir.glob("session_*")), "the jobs did not run on this Ray instance"
    assert wait_until_gone(ray_temp_dir) == [], "Ray outlived the sweep"


@pytest.mark.slow
def test_the_ray_launcher_gives_the_same_runs_on_a_running_cluster(
    basic_sweep, ray_head, ray_temp_dir, tmp_path
):
    """The documented use: join a running cluster by its address (ray_cluster.yaml leaves Ray's
    object store alone, which ray.init requires when it joins one)."""
    address = f"hydra.launcher.ray.init.address={ray_head}"
    sweep(
        tmp_path / "sweep", "hydra/launcher=ray_cluster", address, SWEEP[0], "seed=0", env=RAY_ENV
    )
    assert_same_runs(tmp_path / "sweep", basic_sweep)
    logs = ray_temp_dir.glob("session_*/logs/worker-*.out")
    assert any("_run_job" in log.read_text() for log in logs), "the cluster ran no job"
