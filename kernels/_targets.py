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


# ----------------------------------------------------------------------------- CUDA launches
# The launch rules of every CUDA kernel (why: ``gpu4d.backend.device``'s module docstring, which states
# the whole stream discipline of the GPU path).


def cuda_stream(stream=None):
    """The stream a CUDA kernel launches on: ``stream`` if given, else the stream CuPy considers
    current, so a launch is ordered after the CuPy operations that made its inputs and before
    the ones that read its outputs. 0 (numba's default) under the simulator or without CuPy."""
    if stream is not None:
        return stream
    if simulator_enabled():
        return 0
    import sys

    cupy = sys.modules.get("cupy")  # only a GPU backend imports it; never import it here
    if cupy is None:
        return 0
    return _numba_stream(cupy.cuda.get_current_stream().ptr)


_STREAMS: dict = {}


def _numba_stream(ptr: int):
    """numba's view of the CUDA stream ``ptr`` (made once per stream)."""
    if not ptr:
        return 0  # the legacy default stream, which numba's launches default to
    stream = _STREAMS.get(ptr)
    if stream is None:
        from numba import cuda

        stream = _STREAMS[ptr] = cuda.external_stream(ptr)
    return stream


def cuda_args(*args):
    """Kernel arguments with every CuPy array handed to numba without a stream synchronize.

    numba synchronizes the stream an argument's ``__cuda_array_interface__`` names (CuPy's
    current stream) before each launch unless told not to: five host-blocking waits per
    preprocess launch. The launch goes on that same stream (``cuda_stream``), which orders it
    after the work that made the arguments, so the wait is never needed. A host (numpy) array
    is refused: numba would copy it to the device and back at every launch, synchronously.
    """
    if simulator_enabled():
        return args
    import numpy as np
    from numba import cuda

    wrapped = []
    for a in args:
        if isinstance(a, np.ndarray):
            raise TypeError(f"a host (numpy) array of shape {a.shape} was passed to a CUDA kernel; "
                            "move it to the device first (backend.to_device)")
        if hasattr(a, "__cuda_array_interface__") and not getattr(a, "__cuda_ndarray__", False):
            a = cuda.as_cuda_array(a, sync=False)
        wrapped.append(a)
    return tuple(wrapped)
