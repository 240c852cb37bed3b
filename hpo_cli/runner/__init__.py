"""The experiment runner: ``hpo-run`` and ``hpo-hessian`` (Hydra configs, object building, the
inner/outer loop, diagnostics, checkpoints, metrics, plots and sweeps)."""
