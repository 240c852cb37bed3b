"""hpo_cli/analysis: Hessian analysis, the solver comparison and the training response."""
