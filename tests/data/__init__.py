"""hpo_cli/data: the data sets, the data protocol and streamed splits."""
