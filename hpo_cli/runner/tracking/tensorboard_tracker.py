"""``tracking.trackers=tensorboard``: event files in ``<run dir>/tensorboard``, written by
:class:`torch.utils.tensorboard.SummaryWriter` (needs the ``tensorboard`` package).

    tensorboard --logdir <run dir>        # one run
    tensorboard --logdir <sweep dir>      # every job of a sweep, side by side

Scalars under the ``metrics.csv`` column names at their outer steps; the configuration in the
HParams tab and as a text table; the plots as images and summary.json as text at the end. A
resumed run reopens the folder with ``purge_step`` one past the last step logged, so TensorBoard
discards anything written after it by the interrupted session. Each row is flushed to the event
file before the runner counts it as logged, so a ``kill -9`` loses none; one killed between the
flush and ``tracking.json`` is written again, and the purge drops the first copy. The events live
in the run directory, so a copy of it continues its own copy of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hpo_cli.runner.tracking.base import RunInfo, Tracker

EVENTS_DIR = "tensorboard"
HPARAM_METRICS = ("val_loss", "val_error", "test_error")


def _table(values: dict[str, Any]) -> str:
    rows = "\n".join(f"| {key} | {value} |" for key, value in values.items())
    return f"| key | value |\n| --- | --- |\n{rows}"


class TensorBoardTracker(Tracker):
    """Scalars, hyperparameters, images and text in one TensorBoard run."""

    name = "tensorboard"
    package = "tensorboard"
    stored_in_run_dir = True  # a copied run directory continues its own copy of the events

    def start(self, info: RunInfo, state: dict[str, Any] | None) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.log_dir = info.run_dir / EVENTS_DIR
        logged = -1 if state is None else state.get("logged_until", -1)
        self.writer = SummaryWriter(
            str(self.log_dir), purge_step=logged + 1 if logged >= 0 else None
        )
        self.last_step = max(logged, 0)
        if logged < 0:
            experiment, start, _ = hparams(info.params, dict.fromkeys(HPARAM_METRICS, 0.0))
            self.writer.file_writer.add_summary(experiment)
            self.writer.file_writer.add_summary(start)
            self.writer.add_text("config", _table(info.params), 0)
            self.writer.add_text("tags", _table(info.tags), 0)
            self.writer.flush()
        self.params = info.params
        return {"log_dir": str(self.log_dir), "run_id": str(self.log_dir)}

    def log_row(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # a row reported as logged is on disk
        self.last_step = step

    def finish(self, status: str, artifacts: list[Path], tags: dict[str, str]) -> None:
        import matplotlib.image
        from torch.utils.tensorboard.summary import hparams

        for path in artifacts:
            if path.suffix == ".png":
                image = matplotlib.image.imread(path)[:, :, :3]
                self.writer.add_image(
                    f"plots/{path.stem}", image, self.last_step, dataformats="HWC"
                )
            elif path.suffix == ".json":  # summary.json
                text = json.dumps(json.loads(path.read_text()), indent=2)
                self.writer.add_text(path.name, f"```\n{text}\n```", self.last_step)
        self.writer.add_text("tags", _table(tags), self.last_step)
        _, _, end = hparams(self.params, {})
        end.value[0].metadata.plugin_data.content = _session_end(status)  # the HParams status
        self.writer.file_writer.add_summary(end)
        self.writer.close()

    def location(self) -> str:
        return f"tensorboard --logdir {self.log_dir}"


def _session_end(status: str) -> bytes:
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    codes = {"completed": "STATUS_SUCCESS", "failed": "STATUS_FAILURE"}
    code = api_pb2.Status.Value(codes.get(status, "STATUS_UNKNOWN"))
    end = plugin_data_pb2.SessionEndInfo(status=code)
    return plugin_data_pb2.HParamsPluginData(session_end_info=end, version=0).SerializeToString()
