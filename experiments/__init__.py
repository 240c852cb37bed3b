"""Figure scripts: turn hpo-run run directories into the paper's figures (PNG and PDF).

Each module has ``plot(run_dir, out_dir) -> list[Path]`` reading the run's files
(``metrics.csv``, ``summary.json``, ``.hydra/config.yaml``, ``checkpoint.pt``,
``solver_comparison.csv``; ``hessian.json`` of an ``hpo-hessian`` run) and never training, and
runs as ``python -m experiments.<name> RUN_DIR OUT_DIR`` (a folder that is not a finished run is
one line naming the command that makes it); :mod:`experiments.figures` runs the catalogue once
and writes ``REPORT.md``.
"""
