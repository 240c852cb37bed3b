"""scikit-learn's bundled wine data (178 wines, 13 chemical measurements, 3 cultivars)."""

from __future__ import annotations

import numpy as np


def load_wine(standardize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(inputs (178, 13) float32, labels (178,) int64): hpo-cli's data protocol 2, which the
    runner shuffles with the run's seed and cuts into ``data.split_train``/``split_val``/
    ``split_test``. ``standardize``: zero mean, unit variance per feature (over all 178 wines;
    a simplification for the example)."""
    from sklearn.datasets import load_wine as sklearn_wine

    inputs, labels = sklearn_wine(return_X_y=True)
    if standardize:
        inputs = (inputs - inputs.mean(axis=0)) / inputs.std(axis=0)
    return inputs.astype(np.float32), labels.astype(np.int64)
