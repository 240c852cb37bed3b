"""hpo_cli/runner: hpo-run's command line, configuration, loop, run directory, sweeps, tracking
and reports."""
