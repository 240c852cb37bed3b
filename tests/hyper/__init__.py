"""hpo_cli/hyper: the hyperparameter modules."""
