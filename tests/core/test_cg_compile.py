"""``ConjugateGradient(compile=True)``: each iteration's vector arithmetic through
``torch.compile`` gives the eager answer (float64, a small MLP's damped Hessian). Compilation
takes tens of seconds, hence the slow group."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from hpo_cli import ConjugateGradient
from tests.core.test_preconditioner import small_mlp_hessian
from tests.support.cli_runs import hpo_run
from tests.support.tiny_runs import tiny

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("preconditioner", ["none", "hutchinson"])
def test_a_compiled_solve_equals_the_eager_one(preconditioner):
    hvp, params, _ = small_mlp_hessian()
    b = [torch.linspace(-1, 1, p.numel(), dtype=p.dtype).reshape(p.shape) for p in params]
    options = {"max_iter": 40, "tol": 1e-12, "damping": 2.0, "preconditioner": preconditioner}
    eager_solver = ConjugateGradient(**options)
    compiled_solver = ConjugateGradient(**options, compile=True)
    for _ in range(2):  # the second call reuses the compiled code (and the kept diagonal)
        eager, eager_info = eager_solver(hvp, b)
        compiled, info = compiled_solver(hvp, b)
        assert (info.status, info.iterations, info.matvecs) == (
            eager_info.status,
            eager_info.iterations,
            eager_info.matvecs,
        )
        for got, want in zip(compiled, eager, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_a_run_with_a_compiled_solver_completes(tmp_path):
    # 16 hidden units after 100 warm-up steps: CG converges within max_iter at every hyper-step
    run = tiny("model.hidden_sizes=[16]", "warmup_inner_steps=100")
    result = hpo_run(tmp_path, "solver=cg", "solver.compile=true", "solver.damping=1.0", *run)
    assert result.returncode == 0, result.stderr
    steps = pd.read_csv(tmp_path / "metrics.csv").dropna(subset=["solver_hvps"])
    assert len(steps) == 4 and (steps["solver_status"] == "converged").all()
