"""``compile=true``: the inner step (training loss forward/backward, optimiser step) through
``torch.compile``, hyper-steps eager (:mod:`hpo_cli.core.compiled`).

The refusals are fast (nothing is compiled: they come before the run); the runs that compile are
in the slow group (Inductor compiles C++ for tens of seconds on a loaded CPU). A compiled run is
compared with the eager run in float64, where rounding differences stay near 1e-16 relative: the
tolerance 1e-10 leaves six orders of magnitude for their growth over the run's 70 inner steps,
and still catches anything computed in float32 (~1e-7, e.g. the optimiser's bias corrections
from a float32 step counter) or a stale λ (the hyper-steps move it by percents).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pandas as pd
import pytest
import torch

from hpo_cli.runner.config.schemas import RunConfig
from tests.support.cli_runs import hpo_run
from tests.support.tiny_runs import tiny

RTOL = 1e-10
"""Relative tolerance of a compiled float64 run against the eager one (see the module's doc)."""


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("hpo-run: error:")]


def test_compile_is_off_by_default():
    assert RunConfig.compile is False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["optimizer=hessian_free"],
            "compile=true: HessianFree evaluates the loss inside its step (a closure), which "
            "cannot be compiled",
        ),
        (
            ["reset_inner_optimizer=true"],
            "reset_inner_optimizer=true is invalid: compile=true compiles the optimiser's step "
            "once per run",
        ),
        (
            ["precision=16-mixed"],
            "compile=true cannot compile the gradient scaler of precision=16-mixed",
        ),
    ],
)
def test_what_cannot_be_compiled_is_refused_in_one_line(tmp_path, overrides, message):
    result = hpo_run(tmp_path / "run", *tiny("compile=true", *overrides))
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_no_cpp_compiler_is_refused_in_one_line_before_the_run(tmp_path, monkeypatch):
    from torch._inductor import config

    monkeypatch.setattr(config.cpp, "cxx", (str(tmp_path / "no-such-c++"),))
    result = hpo_run(tmp_path / "run", *tiny("compile=true"))
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "compile=true: No working C++ compiler found" in lines[0]
    assert "install g++ or set CXX); or use compile=false" in lines[0]
    assert not (tmp_path / "run").exists()


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"]


@pytest.mark.slow
def test_a_compiled_run_equals_the_eager_run_to_rounding(tmp_path):
    """The default experiment, tiny, in float64: 50 warm-up and 4 × 5 inner steps, 4 hyper-steps
    moving λ (the compiled loss must read λ's new values at every outer step), compiled once:
    two graphs (the loss, the optimiser's step), none recompiled at a later outer step."""
    from torch._dynamo.utils import counters

    runs = {}
    for compile in ("false", "true"):
        run_dir = tmp_path / compile
        counters.clear()
        result = hpo_run(run_dir, *tiny("dtype=float64", f"compile={compile}"))
        assert result.returncode == 0, result.stderr
        runs[compile] = run_dir
    assert counters["stats"]["unique_graphs"] == 2
    eager, compiled = (pd.read_csv(runs[c] / "metrics.csv") for c in ("false", "true"))
    assert eager["hyper_mean"].iloc[-1] > 2 * eager["hyper_mean"].iloc[0]  # λ moved
    columns = [c for c in eager if c != "wall_time_s" and eager[c].notna().all()]
    pd.testing.assert_frame_equal(compiled[columns], eager[columns], check_exact=False, rtol=RTOL)
    want = final_weights(runs["false"])
    for name, weight in final_weights(runs["true"]).items():
        torch.testing.assert_close(weight, want[name], rtol=RTOL, atol=0)


@pytest.mark.slow
def test_a_compilation_that_fails_stops_the_run_in_one_line(tmp_path, monkeypatch):
    """A C++ compiler that answers ``--version`` (the check before the run) but fails to compile:
    the first inner step fails, one line and exit 1 (a fresh Inductor cache, so that nothing
    compiled before is reused)."""
    from torch._inductor import config

    compiler = tmp_path / "failing-c++"
    compiler.write_text(
        '#!/bin/sh\n[ "$1" = --version ] && exec g++ --version\necho "no, not today" >&2\nexit 1\n'
    )
    compiler.chmod(compiler.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(config.cpp, "cxx", (str(compiler),))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor-cache"))
    monkeypatch.setattr(config, "fx_graph_cache", False)
    result = hpo_run(tmp_path / "run", *tiny("compile=true", "model.hidden_sizes=[7]"))
    lines = error_lines(result.stderr)
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "compile=true: torch.compile failed:" in lines[0] and "use compile=false" in lines[0]
    assert "Traceback" not in result.stderr
    assert os.path.exists(tmp_path / "run" / "summary.json")
