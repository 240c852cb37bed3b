"""``tracking.trackers=mlflow``: one MLflow run per hpo-run run (:class:`mlflow.MlflowClient`).

The default store is SQLite, ``outputs/mlflow/mlflow.db``, with artifacts in
``outputs/mlflow/artifacts`` (MLflow 3 keeps the ``./mlruns`` file store in maintenance mode
and refuses it unless ``MLFLOW_ALLOW_FILE_STORE=true``); browse it with
``mlflow ui --backend-store-uri sqlite:///outputs/mlflow/mlflow.db``. With
``tracking.mlflow_uri=http://HOST:PORT`` the runs go to an ``mlflow server``, which is asked for
``/health`` before training. A sweep is one experiment, ``<tracking.experiment>/<sweep id>``.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from hpo_cli.runner.tracking.base import RunInfo, Tracker, TrackerUnavailable, TrackingSettings

STORE_DIR = Path("outputs/mlflow")
STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
BATCH = 100  # MLflow's limit of parameters (and tags) per log_batch call


def tracking_uri(settings: TrackingSettings) -> str:
    """The store of ``settings``: its ``mlflow_uri``, or the SQLite file under outputs/."""
    if settings.mlflow_uri:
        return settings.mlflow_uri
    STORE_DIR.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(STORE_DIR / 'mlflow.db').resolve()}"


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no table-creation chatter
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def experiment_id(client: Any, name: str, uri: str) -> str:
    """The id of experiment ``name``, created (with artifacts beside the default SQLite store)
    when missing; safe when the jobs of a parallel sweep race to create it."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///") and Path(uri[len("sqlite:///") :]).parent.is_dir():
        location = (Path(uri[len("sqlite:///") :]).parent / "artifacts").resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created by another job in the meantime
        return client.get_experiment_by_name(name).experiment_id


class MLflowTracker(Tracker):
    """Parameters, metrics at their outer steps, artifacts and tags in one MLflow run."""

    name = "mlflow"
    package = "mlflow"

    @classmethod
    def check(cls, settings: TrackingSettings) -> None:
        super().check(settings)
        uri = settings.mlflow_uri
        if uri and is_server(uri):
            try:
                urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5).close()
            except (urllib.error.URLError, OSError, ValueError) as error:
                reason = getattr(error, "reason", error)
                raise TrackerUnavailable(
                    f"tracking.trackers=mlflow: no MLflow server answers at {uri} ({reason}); "
                    "start one with: mlflow server --host 127.0.0.1 --port 5000"
                ) from error

    def start(self, info: RunInfo, state: dict[str, Any] | None) -> dict[str, Any]:
        from mlflow.entities import Param

        uri = state["tracking_uri"] if state else tracking_uri(info.settings)
        self.client = _client(uri)
        logged = {}
        if state is not None:
            self.run_id, experiment = state["run_id"], state["experiment_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            logged["logged_until"] = self._last_step()
        else:
            experiment = experiment_id(self.client, info.experiment, uri)
            run = self.client.create_run(experiment, run_name=info.name, tags=info.tags)
            self.run_id = run.info.run_id
            params = [Param(key, str(value)) for key, value in info.params.items()]
            for start in range(0, len(params), BATCH):
                self.client.log_batch(self.run_id, params=params[start : start + BATCH])
        self.uri, self.experiment = uri, experiment
        return {"tracking_uri": uri, "experiment_id": experiment, "run_id": self.run_id, **logged}

    def _last_step(self) -> int:
        """The last outer step the run's metrics hold (-1: none). A row is one ``log_batch``,
        one transaction: a row the store holds, it holds whole, even if ``tracking.json`` was
        not written after it (then it is not logged twice)."""
        keys = self.client.get_run(self.run_id).data.metrics
        steps = [m.step for key in keys for m in self.client.get_metric_history(self.run_id, key)]
        return max(steps, default=-1)

    def log_row(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, status: str, artifacts: list[Path], tags: dict[str, str]) -> None:
        for path in artifacts:
            self.client.log_artifact(self.run_id, str(path))
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)
        self.client.set_terminated(self.run_id, status=STATUS.get(status, "FAILED"))

    def location(self) -> str:
        if is_server(self.uri):
            return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment}/runs/{self.run_id}"
        return f"mlflow ui --backend-store-uri {self.uri}  (run {self.run_id})"

    @classmethod
    def log_sweep(
        cls,
        sweep_dir: Path,
        job_states: list[dict[str, Any]],
        files: list[Path],
        tags: dict,
        values: dict[str, float],
    ) -> dict[str, Any]:
        from mlflow.entities import Metric

        uri, experiment = job_states[0]["tracking_uri"], job_states[0]["experiment_id"]
        client = _client(uri)
        run = client.create_run(experiment, run_name="sweep summary", tags=tags)
        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, 0) for key, value in values.items()]
        client.log_batch(run.info.run_id, metrics=metrics)
        for path in files:
            client.log_artifact(run.info.run_id, str(path))
        client.set_terminated(run.info.run_id, status="FINISHED")
        return {"tracking_uri": uri, "experiment_id": experiment, "run_id": run.info.run_id}
