"""experiments/: the experiment catalogue, its figure scripts and the Optuna baseline."""
