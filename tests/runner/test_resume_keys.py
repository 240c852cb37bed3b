"""A key a resume may change does not change the run (issue 24): for every key of
:data:`hpo_cli.runner.cli.preflight.RESUME_MAY_CHANGE`, a run interrupted halfway and resumed
with that key changed ends with the uninterrupted run's weights and λ (bit for bit; to rounding
for ``compile``, in float64 and in the slow group), its stop step, and its metrics values at
every step both runs evaluate.

Early stopping is on (it stops the uninterrupted run at outer step 8 of 12, watching val_error
every 2 steps), so a key that moved the stop would show. ``hpo-run`` runs in-process
(:func:`tests.support.cli_runs.call_main`), its preflight checks included.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from hpo_cli.runner.cli import entry
from hpo_cli.runner.cli.preflight import RESUME_MAY_CHANGE
from tests.support.cli_runs import call_main
from tests.support.tiny_runs import interrupt_at, tiny

STOP = ["early_stopping.patience=3", "early_stopping.monitor=val_error"]
BASE = tiny("outer_steps=12", "eval_every=2", "checkpoint_every=4", *STOP)
"""12 outer steps, a row every 2, a checkpoint every 4; early stopping ends it at step 8."""

INTERRUPT_AT = 7
"""The first run is interrupted at the start of outer step 7 (like a kill: its rows after the
checkpoint of step 4 are recomputed by the resume)."""

ES_OFF = "early_stopping.patience=null"
CHANGES: dict[str, tuple[list[str], list[str]]] = {
    # key: (the first run's overrides beside BASE, the resume's overrides)
    "outer_steps": (["outer_steps=5"], ["outer_steps=12"]),  # paused off the eval_every grid
    "progress": ([], ["progress=true"]),
    "plots": ([], ["plots=true"]),
    "eval_every": ([ES_OFF], ["eval_every=3"]),  # with early stopping on, it is refused
    "checkpoint_every": ([], ["checkpoint_every=3"]),
    "max_skipped_fraction": ([], ["max_skipped_fraction=0.9"]),
    "resume": ([], []),  # the resume itself
    "log_every": ([], ["log_every=1"]),
    "tracking": ([], ["tracking.trackers=[tensorboard]"]),
    "early_stopping.patience": ([], ["early_stopping.patience=4"]),  # trains on, on purpose
    "quality_every": ([], ["quality_every=2"]),
    "quality_horizon": (["quality_every=3"], ["quality_horizon=2"]),
    "data.num_workers": ([], ["data.num_workers=0"]),  # streamed: tests/data/test_streaming.py
    "compile": (["dtype=float64"], ["compile=true"]),  # to rounding (tests/runner/test_compile.py)
}
"""For each key of RESUME_MAY_CHANGE, how the test changes it; a key added to the list without
an entry here fails the test."""

OWN_COLUMNS = {"quality_every": {"hypergrad_cosine"}, "quality_horizon": {"hypergrad_cosine"}}
"""Diagnostic columns that a key changes by design (the probe's cosine); every other column
must match."""

TIMING = {"wall_time_s"}

ROUNDING = {"compile": 1e-10}
"""Keys whose change moves the results by rounding only, with the relative tolerance (float64:
tests/runner/test_compile.py says why); every other key must change nothing, bit for bit."""

SLOW = {"compile"}
"""Keys whose resume compiles (tens of seconds): in the slow group."""


def hpo_run(*arguments: str) -> int:
    return call_main(entry.main, "hpo-run", list(arguments)).returncode


def reference_overrides(key: str) -> list[str]:
    """The uninterrupted run a resume changing ``key`` must reproduce: BASE, but with the first
    run's early-stopping setting, and for the patience the resumed value (a larger patience
    trains on as the uninterrupted run with it would), and with the first run's dtype."""
    first, resumed = CHANGES[key]
    if key == "early_stopping.patience":
        return [*BASE, *resumed]
    return [*BASE, *[o for o in first if o.startswith(("early_stopping.", "dtype="))]]


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Uninterrupted runs, one per distinct configuration, made on first use."""
    made: dict[tuple[str, ...], Path] = {}

    def reference(overrides: list[str]) -> Path:
        key = tuple(overrides)
        if key not in made:
            run_dir = tmp_path_factory.mktemp("uninterrupted")
            assert hpo_run(*overrides, f"hydra.run.dir={run_dir}") == 0
            made[key] = run_dir
        return made[key]

    return reference


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """Runs interrupted at :data:`INTERRUPT_AT`, one per distinct first-run configuration, made
    on first use; each test resumes a copy of its own."""
    made: dict[tuple[str, ...], Path] = {}

    def interrupted_copy(overrides: list[str], copy: Path) -> Path:
        key = tuple(overrides)
        if key not in made:
            run_dir = tmp_path_factory.mktemp("interrupted") / "run"
            with pytest.MonkeyPatch.context() as patch:
                interrupt_at(patch, INTERRUPT_AT)
                assert hpo_run(*BASE, *overrides, f"hydra.run.dir={run_dir}") in (0, 130)
            made[key] = run_dir
        shutil.copytree(made[key], copy)
        return copy

    return interrupted_copy


def final_state(run_dir: Path) -> tuple[dict, dict, dict]:
    """The final checkpoint's weights and λ, and summary.json."""
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    return state["model"], state["hyper"], summary


def assert_same_tensors(got: dict, want: dict, what: str, rtol: float | None = None) -> None:
    """Equal bit for bit, or (``rtol``) to that relative tolerance."""
    assert got.keys() == want.keys(), what
    for name in want:
        if rtol is None:
            assert torch.equal(got[name], want[name]), f"{what} {name} differs"
        else:
            torch.testing.assert_close(got[name], want[name], rtol=rtol, atol=0, msg=what)


def test_every_key_a_resume_may_change_has_a_change_to_test():
    assert set(CHANGES) == set(RESUME_MAY_CHANGE), "add the new key to CHANGES (and test it)"


@pytest.mark.parametrize(
    "key", [pytest.param(k, marks=pytest.mark.slow) if k in SLOW else k for k in RESUME_MAY_CHANGE]
)
def test_a_resume_changing_the_key_continues_the_uninterrupted_run(
    key, references, interrupted, tmp_path
):
    assert key in CHANGES, f"{key} is in RESUME_MAY_CHANGE but the test has no change for it"
    first, resumed = CHANGES[key]
    run_dir = interrupted(first, tmp_path / "run")
    assert hpo_run(f"resume={run_dir}", *resumed) == 0
    reference = references(reference_overrides(key))

    weights, hyper, summary = final_state(run_dir)
    want_weights, want_hyper, want_summary = final_state(reference)
    assert (summary["outer_steps"], summary["stop_reason"]) == (
        want_summary["outer_steps"],
        want_summary["stop_reason"],
    )
    rtol = ROUNDING.get(key)
    assert_same_tensors(weights, want_weights, "weight", rtol)
    assert_same_tensors(hyper, want_hyper, "λ", rtol)

    got, want = pd.read_csv(run_dir / "metrics.csv"), pd.read_csv(reference / "metrics.csv")
    steps = sorted(set(got["outer_step"]) & set(want["outer_step"]))
    assert len(steps) >= 4, steps
    columns = sorted((set(got) & set(want)) - TIMING - OWN_COLUMNS.get(key, set()))
    got = got.set_index("outer_step").loc[steps, [c for c in columns if c != "outer_step"]]
    want = want.set_index("outer_step").loc[steps, [c for c in columns if c != "outer_step"]]
    if rtol is None:
        pd.testing.assert_frame_equal(got, want, check_exact=True)
    else:
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=rtol)


def test_eval_every_is_refused_on_resume_while_early_stopping_is_on(tmp_path, monkeypatch):
    """Early stopping counts evaluations: a run resumed with another eval_every would stop at
    another step (the report: step 40 instead of 23), so the resume is refused in one line."""
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_at(patch, INTERRUPT_AT)
        hpo_run(*BASE, f"hydra.run.dir={run_dir}")
    before = (run_dir / "metrics.csv").read_bytes()
    result = call_main(entry.main, "hpo-run", [f"resume={run_dir}", "eval_every=1"])
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "cannot change eval_every (2 -> 1) while early stopping is on" in lines[0]
    assert (run_dir / "metrics.csv").read_bytes() == before


@pytest.mark.parametrize("patience", ["2", "null"])
def test_a_patience_may_only_grow_on_resume(tmp_path, patience):
    """A smaller patience (or one where it was null) would stop the run before the
    uninterrupted one."""
    run_dir = tmp_path / "run"
    start = "early_stopping.patience=3" if patience == "2" else ES_OFF
    assert hpo_run(*tiny(start), f"hydra.run.dir={run_dir}") == 0
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    result = call_main(entry.main, "hpo-run", [f"resume={copy}", "early_stopping.patience=2"])
    assert result.returncode == 2, result.stderr
    assert "early_stopping.patience may only grow on resume" in result.stderr
