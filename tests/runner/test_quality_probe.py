"""``quality_every``: the run's hypergradient against the unrolled hypergradient through its next
inner steps. The probe leaves the run as it was (metrics, resume), equals 1 when the run's method
is the reference itself, and is below 1 where they differ."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.report import plots
from hpo_cli.runner.rundir.summary import hypergradient_quality
from tests.support.tiny_runs import interrupt_at, metrics, run

PROBE = ["quality_every=1"]


def summary_of(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def test_the_probe_leaves_the_run_unchanged(tmp_path):
    """Dropout (the global RNG) and mini-batches (the batch generator) both in play."""
    for name, extra in (("off", []), ("on", PROBE)):
        run(tmp_path / name, "hyper=dropout", *extra)
    off, on = (metrics(tmp_path / name) for name in ("off", "on"))
    assert off["hypergrad_cosine"].isna().all()
    assert on["hypergrad_cosine"].iloc[1:].notna().all()  # every hyper-step's row
    assert on["hypergrad_cosine"].iloc[1:].abs().le(1 + 1e-12).all()
    columns = [c for c in off.columns if c not in ("wall_time_s", "hypergrad_cosine")]
    pd.testing.assert_frame_equal(off[columns], on[columns])
    assert summary_of(tmp_path / "off")["hypergrad_cosine"] is None
    summary = summary_of(tmp_path / "on")["hypergrad_cosine"]
    assert summary["probes"] == 4 and summary["last_step"] == 4
    assert summary["last_cosine"] == pytest.approx(on["hypergrad_cosine"].iloc[-1], abs=0)
    assert summary["median_cosine"] == pytest.approx(on["hypergrad_cosine"].iloc[1:].median())


def test_a_resumed_probed_run_equals_the_uninterrupted_one(tmp_path, monkeypatch):
    every = [*PROBE, "quality_horizon=3"]
    run(tmp_path / "whole", *every)
    interrupt_at(monkeypatch, 4)  # after the checkpoint of step 2
    with pytest.raises(SystemExit):
        run(tmp_path / "resumed", *every)
    monkeypatch.undo()
    run(tmp_path / "resumed", *every, f"resume={tmp_path / 'resumed'}")
    whole, resumed = (
        metrics(tmp_path / d).drop(columns="wall_time_s") for d in ("whole", "resumed")
    )
    pd.testing.assert_frame_equal(whole, resumed)
    assert (
        summary_of(tmp_path / "whole")["hypergrad_cosine"]
        == summary_of(tmp_path / "resumed")["hypergrad_cosine"]
    )


def test_every_k_steps_and_at_the_last(tmp_path):
    run(tmp_path, "quality_every=3")
    table = metrics(tmp_path).set_index("outer_step")["hypergrad_cosine"]
    assert table.notna().tolist() == [False, False, False, True, True]  # steps 0..4


# The run's method IS the reference: solver=unrolled through the same 4 steps of the same Adam,
# and a full-batch training split (20 examples, batch_size=20), so that the next 4 batches the
# reference steps through are the 4 the hyper-step drew (the same examples; the order of a
# mean's terms aside).
SAME = ["dtype=float64", "batch_size=20", "quality_every=1", "quality_horizon=4"]


def test_the_cosine_is_one_when_the_run_unrolls_the_same_steps(tmp_path):
    run(tmp_path, *SAME, "solver=unrolled", "solver.steps=4")
    cosines = metrics(tmp_path)["hypergrad_cosine"].iloc[1:]
    assert cosines.to_numpy() == pytest.approx(1.0, abs=1e-6)


def test_the_cosine_is_below_one_for_identity(tmp_path):
    run(tmp_path, *SAME, "solver=identity")
    cosines = metrics(tmp_path)["hypergrad_cosine"].iloc[1:]
    assert cosines.notna().all() and (cosines < 0.99).all()


def test_solver_png_draws_the_cosine_on_a_right_hand_axis(tmp_path):
    run(tmp_path, *PROBE)
    figure = plots.draw(tmp_path, "solver.png")
    right = figure.axes[-1]
    assert right.get_ylabel() == "cosine with the reference"
    assert len(right.get_lines()[0].get_xdata()) == 4
    plt.close(figure)


def test_the_summary_of_no_probe_of_a_nan_and_of_several():
    assert hypergradient_quality([]) is None
    nan = float("nan")
    assert hypergradient_quality([[1, 0.5], [2, nan]]) == {
        "probes": 2,
        "median_cosine": 0.5,
        "last_cosine": None,
        "last_step": 2,
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["quality_every=0"], "quality_every=0 is invalid: must be > 0 or null"),
        (["quality_horizon=0"], "quality_horizon=0 is invalid: must be > 0 or null"),
        (["quality_every=2", "hyper_steps=false"], "quality_every=2 is invalid: needs hyper_"),
    ],
)
def test_bad_probe_settings_are_refused(tmp_path, overrides, message):
    from hpo_cli.runner.config.validation import validate
    from tests.support.tiny_runs import config

    with pytest.raises(ConfigError, match=message):
        validate(config(*overrides))
