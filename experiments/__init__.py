"""Figure scripts: turn hpo-run run directories into the paper's figures (PNG and PDF).

Each module has ``plot(run_dir, out_dir) -> list[Path]`` reading the run's files
(``metrics.csv``, ``summary.json``, ``.hydra/config.yaml``, ``checkpoint.pt``) and never
training; :mod:`experiments.figures` runs the catalogue once and writes ``REPORT.md``.
"""
