"""Compile one plain-Python scalar function for both kernel targets.

The per-pixel math of every kernel is written once as a plain function of scalars (and, at
most, array element reads). ``for_cpu`` turns it into an inlined ``numba.njit`` function,
``for_cuda`` into a ``numba.cuda`` device function. CUDA kernels live in ``*_cuda`` modules that
only the GPU engine imports, so the CPU path never needs numba's CUDA support. (They import
``numba.cuda`` as a module global: the simulator swaps that global for its fake module.)
"""

from __future__ import annotations

import os

import numba

# numba's parallel CPU kernels run on its "workqueue" threads unless the user chose a layer.
# Its OpenMP layer's threads spin after each kernel, as OpenBLAS's do after each matrix
# product; on 2 cores, alternating kernels and products then ran 2-8x slower (a sketch pass
# of the seed-sized scan: 4.4 s with OpenMP, 1.2 s with workqueue, the kernel alone as fast).
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"


def for_cpu(fn):
    """Compile ``fn`` as an inlined CPU helper for ``numba.njit`` kernels."""
    return numba.njit(inline="always", cache=True)(fn)


def for_cuda(fn):
    """Compile ``fn`` as a CUDA device function."""
    from numba import cuda

    return cuda.jit(device=True)(fn)


def simulator_enabled() -> bool:
    """True when numba runs CUDA kernels in its CPU simulator."""
    from numba import config

    return bool(config.ENABLE_CUDASIM)
