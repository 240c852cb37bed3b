"""hpo-cli's tests, one folder per layer of the package (docs/tests.md)."""
