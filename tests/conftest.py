"""Fixtures shared by several test files, one CPU thread per test process, and the objects of
the imports kept out of the garbage collector's full collections."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """One intra-op thread per test process: ``make test`` runs one process per core
    (pytest-xdist), and a second thread per process would only contend for the same cores (the
    CPU time of a ResNet-18 test grows five-fold on a loaded machine). The runs' own ``threads``
    setting still applies inside hpo-run.

    pytest-xdist's controller process runs no test: it does without torch (about 3 s of imports
    before the test processes start)."""
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
        return
    import torch

    torch.set_num_threads(1)


SHARED_FIXTURES = (
    "finished_run",
    "finished",
    "failed_run",
    "ridge_run",
    "catalogue",
    "mlflow_template",
    "basic_sweep",
)
"""Fixtures made once per module or session and read by several tests, each costing seconds."""


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup``, the tests that use one of :data:`SHARED_FIXTURES` run in one
    process (an ``xdist_group`` named after the fixture), which then makes it once; spread over
    both processes, each would make it again."""
    for item in items:
        shared = [name for name in SHARED_FIXTURES if name in item.fixturenames]
        if shared and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(shared[0]))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Check that pytest-xdist's ``--dist loadgroup`` took the groups (it writes each into the
    test's id, which pytest 9.2 stopped reading: the groups then silently vanish and every shared
    fixture is made in both processes), then :func:`freeze_imports`."""
    if session.config.getoption("dist", "no") == "loadgroup":
        lost = [
            item.nodeid
            for item in session.items
            if item.get_closest_marker("xdist_group") and "@" not in item.nodeid
        ]
        if lost:
            raise pytest.UsageError(f"--dist loadgroup lost the xdist_group of {lost[0]}")
    freeze_imports()


def freeze_imports() -> None:
    """Move what the imports and the collection created (torch, Hydra, matplotlib: about half a
    million objects) out of the garbage collector's sight: its periodic full collections would
    otherwise traverse them again and again, for nothing (they live as long as the process)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """One short completed ``hpo-run`` run (:data:`tiny_runs.TINY` after 100 warm-up steps, with
    its plots), shared by the tests that only read it or copy it (runner/test_cli.py,
    hpo_hessian/test_cli.py)."""
    run_dir = tmp_path_factory.mktemp("finished")
    from tests.support.cli_runs import hpo_run
    from tests.support.tiny_runs import tiny

    result = hpo_run(run_dir, *tiny("warmup_inner_steps=100"), "plots=true")
    assert result.returncode == 0, result.stderr
    return run_dir
