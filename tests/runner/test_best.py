"""The best is the lowest, and a tie is no improvement: summary.json's best-by-validation row on
hand-made rows whose best is neither the first nor the last, and early stopping on exact ties."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from hpo_cli.runner.loop.early_stopping import EarlyStopping, initial_state
from hpo_cli.runner.rundir.metrics import COLUMNS
from hpo_cli.runner.rundir.summary import write_summary

ROWS = [  # (outer_step, val_error, val_loss)
    (0, 0.50, 1.0),
    (1, 0.20, 0.6),
    (2, 0.20, 0.5),  # the best: the lowest error, and of the two rows with it the lower loss
    (3, 0.30, 0.4),  # the lowest loss, but a higher error
    (4, 0.60, 0.9),  # the last row, and the highest error
]


def test_best_by_validation_is_the_lowest_error_then_the_lowest_loss(tmp_path):
    frame = pd.DataFrame(
        [
            {"outer_step": step, "val_error": error, "val_loss": loss, "test_error": 0.1 * step}
            for step, error, loss in ROWS
        ],
        columns=COLUMNS,
    )
    frame.to_csv(tmp_path / "metrics.csv", index=False)
    summary = write_summary(tmp_path, status="completed", progress=None, overrides=[])
    best = summary["best_by_validation"]
    assert (best["outer_step"], best["val_error"], best["val_loss"]) == (2, 0.2, 0.5)
    assert best["test_error"] == pytest.approx(0.2)
    assert summary["final"]["outer_step"] == 4
    assert json.loads((tmp_path / "summary.json").read_text())["best_by_validation"] == best


def test_a_missing_loss_ranks_last_and_breaks_nothing(tmp_path):
    """A diverged evaluation's NaN loss (read back as None) tied on the error with a finite one:
    the finite row is the best, and writing the summary does not fail on the comparison."""
    rows = [(0, 0.2, float("nan")), (1, 0.2, 0.7), (2, 0.4, 0.3)]
    frame = pd.DataFrame(
        [{"outer_step": s, "val_error": e, "val_loss": v} for s, e, v in rows], columns=COLUMNS
    )
    frame.to_csv(tmp_path / "metrics.csv", index=False)
    summary = write_summary(tmp_path, status="completed", progress=None, overrides=[])
    assert summary["best_by_validation"]["outer_step"] == 1


@pytest.mark.parametrize("min_delta", [0.0, 0.25])
def test_an_exact_tie_is_no_improvement(min_delta):
    """1.0, then exactly 1.0 − min_delta (a tie with the threshold; 1.0 itself for min_delta 0):
    no improvement, the best stays at step 0 and wait grows; then a value below it improves.
    The values are dyadic, so the subtraction is exact."""
    rule = EarlyStopping(patience=2, min_delta=min_delta, monitor="val_error")
    state = initial_state()
    assert rule.update(state, {"outer_step": 0, "val_error": 1.0})
    assert not rule.update(state, {"outer_step": 1, "val_error": 1.0 - min_delta})
    assert (state["best"], state["best_step"], state["wait"]) == (1.0, 0, 1)
    assert not rule.update(state, {"outer_step": 2, "val_error": 1.0 - min_delta})
    assert rule.stopped(state)  # two ties in a row stop a run of patience 2
    assert rule.update(state, {"outer_step": 3, "val_error": 1.0 - min_delta - 0.125})
    assert (state["best_step"], state["wait"]) == (3, 0)
