"""Early stopping on the validation loss or error, evaluated on the ``metrics.csv`` rows of the
``eval_every`` grid (outer steps 0, e, 2e, ...; not the extra row of a run's last step, which a
resume that raises ``outer_steps`` would otherwise count and the uninterrupted run would not).

    hpo-run early_stopping.patience=10 early_stopping.min_delta=1e-3
    hpo-run early_stopping.patience=5 early_stopping.monitor=val_error

An evaluation *improves* when its monitored value m satisfies m < best − ``min_delta`` (Keras'
rule); it then becomes the best (its step is the best step, its weights ``checkpoint_best.pt``)
and the count of evaluations without improvement, ``wait``, returns to 0. Otherwise ``wait`` grows
by one, and the run stops once ``wait`` ≥ ``patience``. A non-finite value never improves.

The state (best value, best step, wait) is a plain dict carried by
:class:`hpo_cli.runner.loop.progress.Progress`, so every checkpoint holds it and a resumed run stops
exactly where an uninterrupted one would. Whether the run has stopped is derived from the state
and the *current* patience: resuming a stopped run with a larger patience (or
``early_stopping.patience=null``) trains on; with the same patience it stays stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MONITORS = ("val_loss", "val_error")


def initial_state() -> dict[str, Any]:
    """The state before any evaluation: no best yet, nothing to wait for."""
    return {"best": None, "best_step": None, "wait": 0}


@dataclass(frozen=True)
class EarlyStopping:
    """The rule of the module docstring for one configuration.

    Attributes:
        patience: evaluations without improvement before the run stops; ``None``: never.
        min_delta: the smallest decrease of ``monitor`` that counts as an improvement (≥ 0).
        monitor: the ``metrics.csv`` column watched, one of :data:`MONITORS`.
    """

    patience: int | None = None
    min_delta: float = 0.0
    monitor: str = "val_loss"

    @property
    def enabled(self) -> bool:
        return self.patience is not None

    def update(self, state: dict[str, Any], row: dict[str, Any]) -> bool:
        """Fold one metrics row into ``state`` (in place); return whether it is a new best."""
        value = float(row[self.monitor])
        best = state["best"]
        state["monitor"] = self.monitor
        if math.isfinite(value) and (best is None or value < best - self.min_delta):
            state.update(best=value, best_step=int(row["outer_step"]), wait=0)
            return True
        state["wait"] += 1
        return False

    def stopped(self, state: dict[str, Any]) -> bool:
        """Whether a run in ``state`` has stopped under this configuration's patience."""
        return self.enabled and state["wait"] >= self.patience

    def reason(self, state: dict[str, Any]) -> str:
        """The stop reason for summary.json and the console (call when :meth:`stopped`)."""
        best = "no finite value" if state["best"] is None else f"best {state['best']:.6g}"
        return (
            f"early_stopping: no improvement of {self.monitor} by {self.min_delta:g} in "
            f"{state['wait']} evaluations ({best} at outer step {state['best_step']})"
        )
