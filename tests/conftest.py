"""Fixtures shared by several test files, one CPU thread per test process, and the objects of
the imports kept out of the garbage collector's full collections."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch
from cli_runs import FAST, hpo_run


def pytest_configure(config: pytest.Config) -> None:
    """One intra-op thread per test process: ``make test`` runs one process per core
    (pytest-xdist), and a second thread per process would only contend for the same cores (the
    CPU time of a ResNet-18 test grows five-fold on a loaded machine). The runs' own ``threads``
    setting still applies inside hpo-run."""
    torch.set_num_threads(1)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move what the imports and the collection created (torch, Hydra, matplotlib: about half a
    million objects) out of the garbage collector's sight: its periodic full collections would
    otherwise traverse them again and again, for nothing (they live as long as the process)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """One short completed ``hpo-run`` run (:data:`cli_runs.FAST`), shared by the tests that
    only read it or copy it (test_cli, test_hessian_cli)."""
    run_dir = tmp_path_factory.mktemp("finished")
    result = hpo_run(run_dir, *FAST)
    assert result.returncode == 0, result.stderr
    return run_dir
