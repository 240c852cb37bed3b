"""hpo_cli/hpo_hessian: the hpo-hessian command."""
