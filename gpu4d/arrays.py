"""Array helpers that work for numpy and CuPy arrays alike (a leaf module: numpy only)."""

from __future__ import annotations

import numpy as np


def to_host(array) -> np.ndarray:
    """``array`` as a numpy array: copied from the device for CuPy arrays (and the CUDA
    simulator's device arrays, a numpy subclass), which have ``.get()``; numpy arrays as they are."""
    if type(array) is np.ndarray:
        return array
    get = getattr(array, "get", None)
    return get() if callable(get) else np.asarray(array)
