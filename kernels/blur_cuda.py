"""Gaussian blur of a batch over the detector on the GPU: the CUDA twin of ``kernels.blur``.

One thread per output pixel sums its (2r + 1)^2 neighbourhood with the shared
``pixel_math.blurred_pixel``; the reads of neighbouring threads overlap and stay in cache.
Imported only by the GPU engine and the simulator tests (it imports ``numba.cuda``).
"""

from __future__ import annotations

import functools

import numpy as np
from numba import cuda

from . import _targets, pixel_math

THREADS_PER_BLOCK = 256


@functools.cache
def blur_cuda_kernel():
    blurred = _targets.for_cuda(pixel_math.blurred_pixel)

    @cuda.jit
    def kernel(raw, taps, out):
        index = cuda.grid(1)
        n, qy, qx = raw.shape
        if index < n * qy * qx:
            i = index // (qy * qx)
            rest = index - i * qy * qx
            y = rest // qx
            x = rest - y * qx
            out[i, y, x] = np.float32(blurred(raw, i, y, x, taps))

    return kernel


def launch_blur_cuda(raw, taps, out, *, stream=None, threads_per_block=None):
    """Blur a batch (device arrays; host arrays under the simulator) into ``out``."""
    total = raw.shape[0] * raw.shape[1] * raw.shape[2]
    if total == 0:
        return out
    tpb = threads_per_block or THREADS_PER_BLOCK
    blocks = (total + tpb - 1) // tpb
    blur_cuda_kernel()[blocks, tpb, _targets.cuda_stream(stream)](*_targets.cuda_args(raw, taps, out))
    return out
