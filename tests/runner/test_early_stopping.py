"""Early stopping: the rule against a hand-worked sequence, a run that stops, its best
checkpoint, summary.json, an exact resume, and the resume of a stopped run."""

from __future__ import annotations

import json
import logging
import math

import pandas as pd
import pytest
import torch

from hpo_cli.runner.loop.early_stopping import EarlyStopping, initial_state
from tests.support.tiny_runs import interrupt_at, metrics, run

NEVER_IMPROVES = ["early_stopping.patience=2", "early_stopping.min_delta=1e9"]


def test_the_rule_on_a_hand_worked_sequence():
    """min_delta 0.005, patience 2: 0.9 and 0.89 improve (0.89 < 0.9 − 0.005), 0.897 would not;
    after 0.89 two evaluations without improvement stop the run."""
    rule = EarlyStopping(patience=2, min_delta=0.005, monitor="val_loss")
    state = initial_state()
    values = [1.0, 0.9, 0.95, 0.89, math.nan, 0.92]
    seen = []
    for step, value in enumerate(values):
        improved = rule.update(state, {"outer_step": step, "val_loss": value})
        seen.append((improved, state["wait"], rule.stopped(state)))
    assert seen == [
        (True, 0, False),
        (True, 0, False),
        (False, 1, False),
        (True, 0, False),
        (False, 1, False),  # a NaN never improves
        (False, 2, True),
    ]
    assert state["best"] == 0.89 and state["best_step"] == 3
    assert not rule.update({**state, "wait": 0}, {"outer_step": 6, "val_loss": 0.897})
    assert rule.reason(state) == (
        "early_stopping: no improvement of val_loss by 0.005 in 2 evaluations "
        "(best 0.89 at outer step 3)"
    )
    assert not EarlyStopping(patience=None).stopped({**state, "wait": 100})


def test_a_run_stops_keeps_its_best_checkpoint_and_says_why(tmp_path):
    run(tmp_path, *NEVER_IMPROVES)
    assert metrics(tmp_path)["outer_step"].tolist() == [0, 1, 2]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["outer_steps"] == 2
    assert summary["stop_reason"].startswith(
        "early_stopping: no improvement of val_loss by 1e+09 in 2 evaluations (best "
    )
    assert summary["best"]["step"] == 0 and summary["best"]["checkpoint"] == "checkpoint_best.pt"
    assert summary["best"]["row"]["val_loss"] == summary["best"]["value"]
    best = torch.load(tmp_path / "checkpoint_best.pt", weights_only=False)
    last = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert best["progress"]["outer_step"] == 0 and last["progress"]["outer_step"] == 2
    assert best["progress"]["early_stopping"] == {
        "best": summary["best"]["value"], "best_step": 0, "wait": 0, "monitor": "val_loss"
    }  # fmt: skip
    weights = next(iter(last["model"]))
    assert not torch.equal(best["model"][weights], last["model"][weights])


def test_without_patience_there_is_no_best_checkpoint_but_the_best_step_is_known(tmp_path):
    run(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stop_reason"] == "completed" and summary["best"]["checkpoint"] is None
    table = metrics(tmp_path)
    assert summary["best"]["step"] == table.loc[table["val_loss"].idxmin(), "outer_step"]
    assert not (tmp_path / "checkpoint_best.pt").exists()


def test_a_resumed_run_stops_exactly_where_an_uninterrupted_one_does(tmp_path, monkeypatch):
    """The wait count is in the checkpoint: interrupted after the checkpoint of step 1 (wait 1),
    the resumed run stops at step 2 as the uninterrupted one does, with the same rows."""
    every = ["checkpoint_every=1", *NEVER_IMPROVES]
    run(tmp_path / "whole", *every)
    interrupt_at(monkeypatch, 2)
    with pytest.raises(SystemExit):
        run(tmp_path / "resumed", *every)
    monkeypatch.undo()
    run(tmp_path / "resumed", *every, f"resume={tmp_path / 'resumed'}")
    whole, resumed = (
        metrics(tmp_path / d).drop(columns="wall_time_s") for d in ("whole", "resumed")
    )
    pd.testing.assert_frame_equal(whole, resumed)
    assert resumed["outer_step"].tolist() == [0, 1, 2]


def test_resuming_a_stopped_run_says_so_and_a_larger_patience_trains_on(tmp_path, caplog):
    run(tmp_path, *NEVER_IMPROVES)
    before = metrics(tmp_path)
    with caplog.at_level(logging.WARNING):
        run(tmp_path, *NEVER_IMPROVES, f"resume={tmp_path}")
    (line,) = [r.getMessage() for r in caplog.records if "nothing to continue" in r.getMessage()]
    assert line.startswith(f"{tmp_path} stopped at outer step 2 by early_stopping: no improvement")
    pd.testing.assert_frame_equal(metrics(tmp_path), before)
    run(tmp_path, "early_stopping.patience=null", f"resume={tmp_path}")
    assert metrics(tmp_path)["outer_step"].tolist() == [0, 1, 2, 3, 4]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stop_reason"] == "completed" and summary["outer_steps"] == 4


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("early_stopping.patience=0", "early_stopping.patience=0 is invalid: > 0 or null"),
        ("early_stopping.min_delta=-1", "early_stopping.min_delta=-1.0 is invalid: must be >= 0"),
        ("early_stopping.monitor=test_loss", "early_stopping.monitor=test_loss is invalid"),
    ],
)
def test_bad_early_stopping_settings_are_one_line(tmp_path, capsys, override, message):
    with pytest.raises(SystemExit) as exit_info:
        run(tmp_path, override)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_resume_may_change_the_patience_and_the_trackers_but_not_the_rule():
    from hpo_cli.runner.cli.preflight import resume_may_change

    for key, saved in [
        ("early_stopping.patience", 3),
        ("tracking.trackers", []),
        ("tracking.mlflow_uri", None),
        ("log_every", 10),
        ("early_stopping.min_delta", "<missing>"),  # a run saved before early stopping existed
    ]:
        assert resume_may_change(key, saved), key
    for key, saved in [("early_stopping.min_delta", 0.0), ("early_stopping.monitor", "val_loss")]:
        assert not resume_may_change(key, saved), key
