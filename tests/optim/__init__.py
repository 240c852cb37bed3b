"""hpo_cli/optim: the Hessian-free optimiser."""
