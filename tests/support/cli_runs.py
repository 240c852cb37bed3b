"""Run ``hpo-run`` and ``hpo-hessian`` in the test's own process, as the console scripts do
(``main()`` with ``sys.argv`` set), capturing the exit status, stdout and stderr.

A fresh interpreter costs seconds of imports (torch, Hydra, matplotlib) per command; the tests
whose point is a separate process (kill -9, an installed wheel, the console scripts themselves)
still start one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra


@dataclass
class Result:
    """What ``subprocess.run(..., capture_output=True, text=True)`` would have returned."""

    returncode: int
    stdout: str
    stderr: str


def exit_status(error: SystemExit) -> int:
    if error.code is None:
        return 0
    return error.code if isinstance(error.code, int) else 1


def call_main(main: Callable[[], None], program: str, arguments: list[str]) -> Result:
    """``main()`` with ``sys.argv = [program, *arguments]``. Afterwards Hydra's global state is
    cleared, so that the next composition (here or in another test) starts afresh, and the root
    logger gets its handlers back: the ones a Hydra job adds (the console, the run's log file)
    are closed, so that no later test logs into this one's streams."""
    stdout, stderr = io.StringIO(), io.StringIO()
    saved_argv = sys.argv
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    sys.argv = [program, *arguments]
    code = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                main()
            except SystemExit as error:
                code = exit_status(error)
    finally:
        sys.argv = saved_argv
        GlobalHydra.instance().clear()
        for handler in root.handlers:
            if handler not in saved_handlers:
                handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    return Result(code, stdout.getvalue(), stderr.getvalue())


def hpo_run(run_dir: Path | None, *overrides: str) -> Result:
    """``hpo-run OVERRIDES hydra.run.dir=RUN_DIR`` (no ``hydra.run.dir`` when ``run_dir`` is
    None, e.g. for ``resume=`` or ``-m``)."""
    from hpo_cli.runner import cli

    directory = [] if run_dir is None else [f"hydra.run.dir={run_dir}"]
    return call_main(cli.main, "hpo-run", [*overrides, *directory])


def hpo_hessian(run_dir: Path, *overrides: str) -> Result:
    """``hpo-hessian OVERRIDES hydra.run.dir=RUN_DIR``."""
    from hpo_cli import hpo_hessian as hessian_cli

    return call_main(hessian_cli.main, "hpo-hessian", [*overrides, f"hydra.run.dir={run_dir}"])
