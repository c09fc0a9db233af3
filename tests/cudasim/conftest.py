"""Tests that run the CUDA kernels in numba's simulator.

They need ``NUMBA_ENABLE_CUDASIM=1`` set before numba is first imported, so they run in their
own pytest process (see README); in the main test run they are skipped.
"""

import pytest
from numba import config

SIMULATOR_ON = bool(config.ENABLE_CUDASIM)


def pytest_collection_modifyitems(config, items):
    if SIMULATOR_ON:
        return
    skip = pytest.mark.skip(
        reason="CUDA simulator tests: run 'NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cudasim'"
    )
    for item in items:
        if "cudasim" in item.nodeid:
            item.add_marker(skip)
