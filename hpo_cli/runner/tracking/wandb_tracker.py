"""``tracking.trackers=wandb``: a Weights & Biases run, offline unless ``tracking.wandb_mode``.

Offline, nothing touches the network: the run is written to
``<run dir>/wandb/offline-run-<time>-<id>/`` (``run-<id>.wandb`` holds the history, ``files/``
the attached files), and ``wandb sync <that folder>`` uploads it later. The project is
``tracking.experiment``; a sweep's jobs share the group ``<sweep id>``. A resumed run reopens the
same run id (``resume="allow"``); offline, that is a second folder with the same id, which
``wandb sync`` appends to the first.

W&B writes through its own service process, after ``run.log`` has returned (and, given a step,
holds the row open until the next one unless told ``commit=True``), so a ``kill -9`` can lose the
last rows handed to it. A resume therefore continues from the last step W&B's run files hold
(:func:`hpo_cli.runner.tracking.wandb_files.last_step`), not from what was handed over: each
step ends up in exactly one session's folder, none lost, none twice.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from hpo_cli.runner.tracking.base import RunInfo, Tracker
from hpo_cli.runner.tracking.wandb_files import last_step


def _settings() -> Any:
    import wandb

    # quiet, and no machine statistics, git or code capture: the run's own data only
    return wandb.Settings(
        silent=True, console="off", x_disable_stats=True, disable_git=True, save_code=False
    )


def _copy_files(paths: list[Path], run_files: Path) -> None:
    """Copy files into the run's ``files/`` folder, which W&B uploads with the run (at its end
    online, with ``wandb sync`` offline)."""
    for path in paths:
        shutil.copyfile(path, run_files / path.name)


def _project(experiment: str) -> str:
    return experiment.replace("/", "-")  # W&B project names may not contain "/"


class WandbTracker(Tracker):
    """Config, history at the outer steps, files, tags and summary in one W&B run."""

    name = "wandb"
    package = "wandb"
    durable = False  # W&B's service process writes the row after run.log returns

    def start(self, info: RunInfo, state: dict[str, Any] | None) -> dict[str, Any]:
        import wandb

        self.run_dir = info.run_dir
        written: dict[str, int] = {}  # read before this session opens a file of its own
        if state is not None:  # the rows W&B wrote, whatever was handed to it before a kill
            written["logged_until"] = last_step(info.run_dir / "wandb", state["run_id"])
        self.run = wandb.init(
            project=_project(info.settings.experiment),
            group=info.group,
            name=info.name,
            id=None if state is None else state["run_id"],
            resume=None if state is None else "allow",
            dir=str(info.run_dir),
            mode=info.settings.wandb_mode,
            config=info.params if state is None else None,
            notes=info.tags["overrides"],
            tags=[f"{k}={v}" for k, v in info.tags.items() if k not in ("status", "overrides")],
            reinit="create_new",
            settings=_settings(),
        )
        self.mode = info.settings.wandb_mode
        found = {
            "run_id": self.run.id,
            "project": self.run.project,
            "group": info.group,
            "mode": self.mode,
            "dir": str(info.run_dir),
            "files": str(Path(self.run.dir).parent),
        }
        return {**found, **written}

    def log_row(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step, commit=True)  # else W&B holds the row until the next

    def finish(self, status: str, artifacts: list[Path], tags: dict[str, str]) -> None:
        _copy_files(artifacts, Path(self.run.dir))
        self.run.tags = (*self.run.tags, f"status={status}")
        self.run.summary.update(tags)
        self.run.finish(exit_code=0 if status == "completed" else 1)

    def location(self) -> str:
        folder = Path(self.run.dir).parent
        return f"wandb sync {folder}" if self.mode == "offline" else str(self.run.url)

    @classmethod
    def log_sweep(
        cls,
        sweep_dir: Path,
        job_states: list[dict[str, Any]],
        files: list[Path],
        tags: dict,
        values: dict[str, float],
    ) -> dict[str, Any]:
        import wandb

        first = job_states[0]
        run = wandb.init(
            project=first["project"],
            group=first["group"],
            name="sweep summary",
            job_type="sweep-summary",
            dir=str(sweep_dir),
            mode=first["mode"],
            tags=[f"{key}={value}" for key, value in tags.items()],
            reinit="create_new",
            settings=_settings(),
        )
        _copy_files(files, Path(run.dir))
        run.summary.update({**tags, **values})
        run.finish()
        return {"run_id": run.id, "files": str(Path(run.dir).parent)}
