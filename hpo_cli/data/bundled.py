"""scikit-learn's bundled data files (digits, diabetes), read without importing scikit-learn.

Importing ``sklearn.datasets`` costs about two seconds at every start of ``hpo-run`` (it imports
much of SciPy), for a few hundred kilobytes of CSV. :func:`bundled_table` finds scikit-learn's
installed package folder without running it (``importlib.util.find_spec``) and reads the file as
scikit-learn's own loaders do: ``numpy.loadtxt`` on the gzip-compressed text.
tests/data/test_datasets.py checks the arrays against scikit-learn's loaders.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np


def sklearn_data_folder() -> Path | None:
    """scikit-learn's ``datasets/data`` folder, found without importing scikit-learn (None when
    scikit-learn is not installed)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def bundled_table(name: str, delimiter: str | None = None) -> np.ndarray:
    """A copy of the float64 table (rows, columns) in scikit-learn's bundled data file
    ``name``, split at ``delimiter`` (None: whitespace); each file is parsed once per process
    (every job of a multirun, every run of the test suite loads the same digits).

    Raises:
        ValueError: in one line, when the file is missing or cannot be read.
    """
    folder = sklearn_data_folder()
    if folder is None or not (folder / name).is_file():
        where = "scikit-learn is not installed" if folder is None else f"not in {folder}"
        raise ValueError(
            f"scikit-learn's bundled data file {name} is missing ({where}); "
            "reinstall it: pip install --force-reinstall scikit-learn"
        )
    return _read_table(folder / name, delimiter).copy()


@functools.cache
def _read_table(path: Path, delimiter: str | None) -> np.ndarray:
    try:
        return np.loadtxt(path, delimiter=delimiter)
    except (OSError, EOFError, ValueError) as error:
        raise ValueError(
            f"scikit-learn's bundled data file {path} cannot be read ({error}); "
            "reinstall it: pip install --force-reinstall scikit-learn"
        ) from error
