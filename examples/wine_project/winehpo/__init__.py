"""A researcher's own project, outside hpo-cli: scikit-learn's wine data, a small residual
network and a per-input-feature weight decay (automatic relevance determination), tuned by
hpo-cli's runner from this project's own ``conf/`` directory."""
