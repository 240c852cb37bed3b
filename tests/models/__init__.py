"""hpo_cli/models: every model option."""
