"""``tracking.trackers=[tensorboard|mlflow|wandb]``: each tracker's own files or store read back
by the tool's own reader (TensorBoard's EventAccumulator, MlflowClient, the W&B offline run
file), resume without duplicated steps, one-line refusals before training, and a tracker that
fails mid-run. The slow group sends a run and a sweep to a real ``mlflow server`` on 127.0.0.1."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from hpo_cli.runner.rundir.names import TRACKING
from hpo_cli.runner.sweeps.aggregate import AggregateSweep
from hpo_cli.runner.tracking import MLflowTracker
from tests.support.tiny_runs import TINY, interrupt_at, metrics, run, tiny

EXTRA = 'needs the tracking extra: pip install -e ".[tracking]" (make install-tracking)'


def tracking_state(run_dir: Path) -> dict:
    return json.loads((run_dir / TRACKING).read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- TensorBoard
def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard's own reader over ``run_dir/tensorboard``: tag → [(step, value)]."""
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator", reason=EXTRA
    )
    reader = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"), size_guidance={})
    reader.Reload()
    self_scalars = reader.Tags()["scalars"]
    return {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in self_scalars}


def test_tensorboard_holds_every_row_the_config_and_the_plots(tmp_path):
    pytest.importorskip("tensorboard", reason=EXTRA)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run(tmp_path, "tracking.trackers=[tensorboard]", "plots=true", "solver=cg")
    table = metrics(tmp_path)
    read = scalars(tmp_path)
    for column in ("train_loss", "val_loss", "val_error", "test_error", "hyper_mean"):
        assert [step for step, _ in read[column]] == table["outer_step"].tolist()
        assert [v for _, v in read[column]] == pytest.approx(table[column].tolist(), rel=1e-6)
    assert [s for s, _ in read["hypergrad_norm"]] == [1, 2, 3, 4]  # NaN at step 0: left out
    reader = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={})
    reader.Reload()
    assert set(reader.Tags()["images"]) == {
        "plots/errors",
        "plots/losses",
        "plots/hyperparameters",
        "plots/solver",
    }
    hparams = reader.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"])
    values = start.session_start_info.hparams
    assert values["solver.max_iter"].number_value == 20
    assert values["dataset._target_"].string_value == "hpo_cli.data.digits.load_digits"
    end = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_end_info"])
    assert end.session_end_info.status == 1  # STATUS_SUCCESS
    texts = reader.Tags()["tensors"]
    assert {"config/text_summary", "summary.json/text_summary", "tags/text_summary"} <= set(texts)


def test_tensorboard_resume_continues_the_same_folder_without_duplicated_steps(
    tmp_path, monkeypatch
):
    pytest.importorskip("tensorboard", reason=EXTRA)
    interrupt_at(monkeypatch, 4)  # checkpoint at 2, rows 0..3 logged
    with pytest.raises(SystemExit):
        run(tmp_path, "tracking.trackers=[tensorboard]")
    assert tracking_state(tmp_path)["tensorboard"]["logged_until"] == 3
    monkeypatch.undo()
    # TensorBoard reads a folder's event files in name order, events.out.tfevents.<whole
    # second>.<host>.<pid>.<writer count>: in this one process within the same second the count
    # decides, as text ("10" < "9"), so the resumed run starts in a later second, as a resume in
    # a process of its own does.
    time.sleep(1.0 - time.time() % 1.0)
    run(tmp_path, "tracking.trackers=[tensorboard]", f"resume={tmp_path}")
    table = metrics(tmp_path)
    read = scalars(tmp_path)
    assert [s for s, _ in read["val_loss"]] == [0, 1, 2, 3, 4]
    # rows 3 is recomputed after the resume (bit for bit on the CPU): the logged values match
    assert [v for _, v in read["val_loss"]] == pytest.approx(table["val_loss"].tolist(), rel=1e-6)


# ---------------------------------------------------------------- MLflow
@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty, migrated MLflow SQLite store, made once (MLflow creates its tables in seconds)
    and copied by each test."""
    pytest.importorskip("mlflow", reason=EXTRA)
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_store(tmp_path, mlflow_template, monkeypatch) -> Path:
    """The default store, ``outputs/mlflow/mlflow.db`` under the working directory."""
    store = tmp_path / "outputs" / "mlflow" / "mlflow.db"
    store.parent.mkdir(parents=True)
    shutil.copyfile(mlflow_template, store)
    monkeypatch.chdir(tmp_path)
    return store


def mlflow_run(uri: str, run_dir: Path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return client, client.get_run(tracking_state(run_dir)["mlflow"]["run_id"])


def assert_history(client, run_id: str, table: pd.DataFrame, column: str) -> None:
    history = sorted(client.get_metric_history(run_id, column), key=lambda m: m.step)
    rows = table.dropna(subset=[column])
    assert [m.step for m in history] == rows["outer_step"].tolist()
    assert [m.value for m in history] == pytest.approx(rows[column].tolist(), rel=1e-12)


def test_mlflow_local_store_holds_params_metrics_artifacts_and_tags(tmp_path, mlflow_store):
    run(tmp_path / "run", "tracking.trackers=[mlflow]")
    client, found = mlflow_run(f"sqlite:///{mlflow_store}", tmp_path / "run")
    table = metrics(tmp_path / "run")
    for column in ("train_loss", "val_loss", "val_error", "test_error", "hypergrad_norm"):
        assert_history(client, found.info.run_id, table, column)
    assert found.data.params["solver._target_"] == "hpo_cli.core.solvers.neumann.Neumann"
    assert found.data.params["outer_steps"] == "4"
    assert "resume" not in found.data.params
    tags = found.data.tags
    assert tags["status"] == "completed" and tags["device"] == "cpu"
    assert tags["hpo_cli_version"] == "0.1.0"
    assert found.info.status == "FINISHED"
    assert client.get_experiment(found.info.experiment_id).name == "hpo-cli"
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"summary.json", "metrics.csv"} <= artifacts
    local = Path(client.download_artifacts(found.info.run_id, "summary.json", str(tmp_path)))
    assert json.loads(local.read_text())["status"] == "completed"
    assert (mlflow_store.parent / "artifacts").is_dir()  # beside the store, under outputs/


def test_mlflow_resume_continues_the_same_run_without_duplicated_steps(
    tmp_path, mlflow_store, monkeypatch
):
    interrupt_at(monkeypatch, 4)
    with pytest.raises(SystemExit):
        run(tmp_path / "run", "tracking.trackers=[mlflow]")
    client, interrupted = mlflow_run(f"sqlite:///{mlflow_store}", tmp_path / "run")
    assert interrupted.info.status == "KILLED" and interrupted.data.tags["status"] == "interrupted"
    monkeypatch.undo()
    run(
        tmp_path / "run",
        "tracking.trackers=[mlflow]",
        f"resume={tmp_path / 'run'}",
        "outer_steps=5",
    )
    client, resumed = mlflow_run(f"sqlite:///{mlflow_store}", tmp_path / "run")
    assert resumed.info.run_id == interrupted.info.run_id
    assert resumed.info.status == "FINISHED" and resumed.data.tags["status"] == "completed"
    assert_history(client, resumed.info.run_id, metrics(tmp_path / "run"), "val_loss")
    assert len(client.search_runs([resumed.info.experiment_id])) == 1


def test_a_tracker_added_on_resume_catches_up_from_metrics_csv(tmp_path, mlflow_store):
    run(tmp_path / "run", "outer_steps=3")
    run(
        tmp_path / "run",
        "tracking.trackers=[mlflow]",
        f"resume={tmp_path / 'run'}",
        "outer_steps=4",
    )
    client, found = mlflow_run(f"sqlite:///{mlflow_store}", tmp_path / "run")
    assert_history(client, found.info.run_id, metrics(tmp_path / "run"), "test_error")


def test_a_tracker_failing_mid_run_is_switched_off_and_loses_nothing(
    tmp_path, mlflow_store, monkeypatch, caplog
):
    real = MLflowTracker.log_row

    def flaky(self, values, step):
        if step == 2:
            raise ConnectionError("the store went away")
        real(self, values, step)

    monkeypatch.setattr(MLflowTracker, "log_row", flaky)
    assert math.isfinite(run(tmp_path / "run", "tracking.trackers=[mlflow]"))
    assert metrics(tmp_path / "run")["outer_step"].tolist() == [0, 1, 2, 3, 4]
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    state = tracking_state(tmp_path / "run")["mlflow"]
    assert state["logged_until"] == 1
    assert state["disabled"] == "outer step 2: ConnectionError: the store went away"
    warning = [r.message for r in caplog.records if "tracking.trackers=mlflow failed" in r.message]
    assert len(warning) == 1 and "metrics.csv and the checkpoints are not affected" in warning[0]
    client, found = mlflow_run(f"sqlite:///{mlflow_store}", tmp_path / "run")
    assert [m.step for m in client.get_metric_history(found.info.run_id, "val_loss")] == [0, 1]


def test_a_sweep_is_one_mlflow_experiment_with_a_summary_run(tmp_path, mlflow_store):
    sweep_dir = tmp_path / "multirun" / "sweep"
    for job, seed in enumerate((0, 1)):
        run(sweep_dir / str(job), "tracking.trackers=[mlflow]", f"seed={seed}", multirun=True)
        (sweep_dir / str(job) / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n")
    hydra_config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})
    AggregateSweep().on_multirun_end(config=hydra_config)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{mlflow_store}")
    experiment = client.get_experiment_by_name("hpo-cli/multirun/sweep")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"job 0", "job 1", "sweep summary"}
    assert runs["job 1"].data.tags["overrides"] == "tracking.trackers=[mlflow] seed=1"
    summary = runs["sweep summary"]
    assert summary.data.tags["kind"] == "sweep_summary" and summary.data.tags["failed_jobs"] == "0"
    files = {a.path for a in client.list_artifacts(summary.info.run_id)}
    assert {"sweep.csv", "sweep_best.csv", "sweep_summary.csv", "sweep_failures.csv"} <= files
    assert "sweep.png" in files
    assert runs["job 1"].data.tags["sweep"] == "multirun/sweep"
    # the best setting (the seeds are the only override: one setting) and its numbers
    ranking = pd.read_csv(sweep_dir / "sweep_summary.csv")
    assert summary.data.tags["best_setting"] == ranking["setting"].iloc[0] == "(one setting)"
    for key in ("val_error", "val_loss", "test_error"):
        for stat in ("mean", "std"):
            expected = ranking[f"{key}_{stat}"].iloc[0]
            assert summary.data.metrics[f"best_{key}_{stat}"] == pytest.approx(expected)
    assert summary.data.metrics["best_seeds"] == 2 and summary.data.metrics["best_failed"] == 0
    best = tracking_state(sweep_dir)["best"]
    assert best["setting"] == "(one setting)" and best["best_seeds"] == 2


# ---------------------------------------------------------------- W&B, offline
def test_wandb_offline_run_files_hold_config_history_and_files(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason=EXTRA)
    from tests.support import wandb_records

    monkeypatch.setenv("WANDB_MODE", "online")  # the config's offline default wins
    run(tmp_path, "tracking.trackers=[wandb]")
    state = tracking_state(tmp_path)["wandb"]
    folder = Path(state["files"])
    assert folder.parent == tmp_path / "wandb" and folder.name.startswith("offline-run-")
    wandb_records.wait_for_exit(folder / f"run-{state['run_id']}.wandb")
    history = wandb_records.history(folder / f"run-{state['run_id']}.wandb")
    table = metrics(tmp_path)
    assert [row["_step"] for row in history] == table["outer_step"].tolist()
    assert [row["val_loss"] for row in history] == pytest.approx(table["val_loss"].tolist())
    record = wandb_records.run_record(folder / f"run-{state['run_id']}.wandb")
    assert record.project == "hpo-cli" and record.run_group == ""
    config = {item.key: json.loads(item.value_json) for item in record.config.update}
    assert config["outer_steps"] == 4 and config["solver.terms"] == 4  # terms=4: 3 products
    assert "device=cpu" in record.tags
    for name in ("summary.json", "metrics.csv"):
        assert (folder / "files" / name).read_bytes() == (tmp_path / name).read_bytes()


def test_wandb_resume_continues_the_same_run_id_without_duplicated_steps(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason=EXTRA)
    from tests.support import wandb_records

    interrupt_at(monkeypatch, 4)
    with pytest.raises(SystemExit):
        run(tmp_path, "tracking.trackers=[wandb]")
    first = tracking_state(tmp_path)["wandb"]
    monkeypatch.undo()
    run(tmp_path, "tracking.trackers=[wandb]", f"resume={tmp_path}")
    second = tracking_state(tmp_path)["wandb"]
    assert second["run_id"] == first["run_id"] and second["files"] != first["files"]
    steps = []
    for folder in (first["files"], second["files"]):
        path = Path(folder) / f"run-{first['run_id']}.wandb"
        wandb_records.wait_for_exit(path)
        steps.append([row["_step"] for row in wandb_records.history(path)])
    assert steps == [[0, 1, 2, 3], [4]]  # wandb sync appends the second folder to the run


# ---------------------------------------------------------------- refusals before training
def test_a_missing_tracker_package_is_one_line_and_exit_2_before_training(
    tmp_path, monkeypatch, capsys
):
    from hpo_cli.runner.tracking import WandbTracker

    monkeypatch.setattr(WandbTracker, "package", "no_such_wandb_package")
    with pytest.raises(SystemExit) as exit_info:
        run(tmp_path, "tracking.trackers=[tensorboard,wandb]")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "hpo-run: error: tracking.trackers=wandb needs the no_such_wandb_package package: "
        'pip install -e ".[tracking]" (or make install-tracking)'
    ]
    assert not (tmp_path / "metrics.csv").exists()


def test_an_unreachable_mlflow_server_is_one_line_and_exit_2_before_training(tmp_path, capsys):
    pytest.importorskip("mlflow", reason=EXTRA)
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SystemExit) as exit_info:
        run(tmp_path, "tracking.trackers=[mlflow]", f"tracking.mlflow_uri={uri}")
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(
        f"hpo-run: error: tracking.trackers=mlflow: no MLflow server answers at {uri}"
    )
    assert not (tmp_path / "metrics.csv").exists()


def test_an_unknown_tracker_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(tmp_path, "tracking.trackers=[tensorboard,neptune]")
    assert exit_info.value.code == 2
    assert "tracking.trackers=['tensorboard', 'neptune'] is invalid" in capsys.readouterr().err


# ---------------------------------------------------------------- a real mlflow server (slow)
@pytest.fixture
def mlflow_server(tmp_path) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 at a free port, its store in tmp_path; killed at the end."""
    pytest.importorskip("mlflow", reason=EXTRA)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", str(tmp_path / "server-artifacts"),
    ]  # fmt: skip
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                import urllib.request

                urllib.request.urlopen(f"{uri}/health", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()
                assert time.monotonic() < deadline, "mlflow server did not start in 90 s"
                time.sleep(0.5)
        yield uri
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.mark.slow
def test_a_real_mlflow_server_receives_a_run_and_a_sweep(tmp_path, mlflow_server):
    from mlflow import MlflowClient

    hpo_run = str(Path(sys.executable).parent / "hpo-run")
    common = [*TINY, "tracking.trackers=[mlflow]", f"tracking.mlflow_uri={mlflow_server}"]
    single = subprocess.run(
        [hpo_run, *common, f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr
    sweep_dir = tmp_path / "multirun" / "sweep"
    sweep = subprocess.run(
        [hpo_run, "-m", *common, "seed=0,1", f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr
    client = MlflowClient(tracking_uri=mlflow_server)
    run_id = tracking_state(tmp_path / "run")["mlflow"]["run_id"]
    assert_history(client, run_id, metrics(tmp_path / "run"), "val_loss")
    assert "summary.json" in {a.path for a in client.list_artifacts(run_id)}
    experiment = client.get_experiment_by_name("hpo-cli/multirun/sweep")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"job 0", "job 1", "sweep summary"}
    assert runs["job 1"].data.params["seed"] == "1" and runs["job 1"].info.status == "FINISHED"
    summary_files = client.list_artifacts(runs["sweep summary"].info.run_id)
    assert "sweep.png" in {a.path for a in summary_files}


# ---------------------------------------------------------------- kill -9, copies and moves
ALL = "tracking.trackers=[tensorboard,mlflow,wandb]"


def wandb_steps(run_dir: Path, run_id: str) -> list[int]:
    """Every history step of W&B run ``run_id`` in ``run_dir``, over all its sessions' files
    (what ``wandb sync`` uploads), each file once W&B's service has done with it."""
    from hpo_cli.runner.tracking.wandb_files import history_steps, run_files, settle

    files = run_files(run_dir / "wandb", run_id)
    for path in files:
        settle(path)
    return [step for path in files for step in history_steps(path)]


def assert_every_row_once(run_dir: Path, store: Path, trackers: tuple[str, ...]) -> None:
    """Each tracker holds every metrics.csv row at its outer step, once."""
    from mlflow import MlflowClient

    state, steps = tracking_state(run_dir), metrics(run_dir)["outer_step"].tolist()
    if "tensorboard" in trackers:
        assert [s for s, _ in scalars(run_dir)["val_loss"]] == steps
    if "mlflow" in trackers:
        client = MlflowClient(tracking_uri=f"sqlite:///{store}")
        assert_history(client, state["mlflow"]["run_id"], metrics(run_dir), "val_loss")
    if "wandb" in trackers:
        assert wandb_steps(run_dir, state["wandb"]["run_id"]) == steps


def own_wandb_service() -> dict[str, str]:
    """This environment without ``WANDB_SERVICE``, which W&B sets once this process has used it
    and which a child would inherit: the child then writes through this process's W&B service,
    which keeps the killed child's run open, as a shell's hpo-run does not."""
    return {key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"}


def test_a_run_killed_with_sigkill_and_resumed_loses_no_row_and_logs_none_twice(
    tmp_path, mlflow_store
):
    """kill -9 of a real hpo-run: W&B writes through its own process, so what was handed to it
    is not yet what it holds; the resume goes by what each tracker's store holds."""
    pytest.importorskip("wandb", reason=EXTRA)
    run_dir = tmp_path / "run"
    hpo_run = str(Path(sys.executable).parent / "hpo-run")
    steps = tiny("outer_steps=400", "eval_every=1", "checkpoint_every=3")
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(
            [hpo_run, *steps, ALL, f"hydra.run.dir={run_dir}"],
            stdout=log,
            stderr=log,
            env=own_wandb_service(),
        )
        try:
            deadline = time.monotonic() + 240
            while not (run_dir / "metrics.csv").exists() or len(metrics(run_dir)) < 12:
                assert first.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            first.send_signal(signal.SIGKILL)
        finally:
            first.wait()
    assert first.returncode == -signal.SIGKILL
    killed_at = len(metrics(run_dir))
    state = tracking_state(run_dir)
    assert state["wandb"]["logged_until"] == -1, "W&B's rows are counted by its files only"
    run(run_dir, *steps[1:], ALL, f"resume={run_dir}", "outer_steps=20")
    assert killed_at < 20 and metrics(run_dir)["outer_step"].tolist() == list(range(21))
    assert_every_row_once(run_dir, mlflow_store, ("tensorboard", "mlflow", "wandb"))


def test_a_resume_sends_again_what_a_tracker_had_not_confirmed(tmp_path, mlflow_store, monkeypatch):
    """tracking.json behind the trackers' stores (a kill after a row was stored, before
    tracking.json was written): MLflow's store is asked what it holds, TensorBoard purges what
    comes after; neither holds a step twice."""
    run_dir = tmp_path / "run"
    trackers = "tracking.trackers=[tensorboard,mlflow]"
    with monkeypatch.context() as patch, pytest.raises(SystemExit):
        interrupt_at(patch, 4)  # rows 0..3 logged
        run(run_dir, trackers)
    state = tracking_state(run_dir)
    for name in ("tensorboard", "mlflow"):
        state[name]["logged_until"] = 1
    (run_dir / TRACKING).write_text(json.dumps(state))
    run(run_dir, trackers, f"resume={run_dir}")
    assert_every_row_once(run_dir, mlflow_store, ("tensorboard", "mlflow"))


def test_a_copied_run_directory_gets_its_own_tracker_runs_and_a_moved_one_keeps_them(
    tmp_path, mlflow_store, monkeypatch, caplog
):
    """``cp -a X Y`` then resuming both: Y does not log into X's MLflow run; it gets its own,
    with the metrics so far, and continues its own copy of TensorBoard's events. ``mv`` keeps
    the runs."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{mlflow_store}")
    trackers = "tracking.trackers=[tensorboard,mlflow]"
    original, copy, moved = tmp_path / "x", tmp_path / "y", tmp_path / "z"
    with monkeypatch.context() as patch, pytest.raises(SystemExit):
        interrupt_at(patch, 4)
        run(original, trackers)
    subprocess.run(["cp", "-a", str(original), str(copy)], check=True)
    for run_dir in (original, copy):
        run(run_dir, trackers, f"resume={run_dir}", "outer_steps=6")
        assert_every_row_once(run_dir, mlflow_store, ("tensorboard", "mlflow"))
    ids = [tracking_state(d)["mlflow"]["run_id"] for d in (original, copy)]
    assert ids[0] != ids[1]
    assert tracking_state(copy)["mlflow"]["run_dir"] == str(copy.resolve())
    assert f"{copy} is a copy of {original}" in caplog.text
    experiment = client.get_run(ids[0]).info.experiment_id
    assert len(client.search_runs([experiment])) == 2

    original.rename(moved)  # mv
    run(moved, trackers, f"resume={moved}", "outer_steps=8")
    assert tracking_state(moved)["mlflow"]["run_id"] == ids[0]
    assert_every_row_once(moved, mlflow_store, ("tensorboard", "mlflow"))
    assert len(client.search_runs([experiment])) == 2
