"""Gaussian blur of a batch over the detector on the GPU: the CUDA twin of ``kernels.blur``.

One thread per output pixel sums its (2r + 1)^2 neighbourhood of the aligned, masked pattern
with the shared ``pixel_math.make_blurred_pixel_f32``, in float32; the reads of neighbouring
threads overlap and stay in cache.
Imported only by the GPU engine and the simulator tests (it imports ``numba.cuda``).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from . import _targets, pixel_math
from .preprocess_cuda import _no_shifts

THREADS_PER_BLOCK = 256


@functools.cache
def blur_cuda_kernel():
    read = _targets.for_cuda(pixel_math.read_pixel_f32)
    bilinear = _targets.for_cuda(pixel_math.make_bilinear_pixel_f32(read))
    blurred = _targets.for_cuda(pixel_math.make_blurred_pixel_f32(read, bilinear))

    @cuda.jit
    def kernel(raw, shifts, use_shifts, keep, taps, out):
        index = cuda.grid(1)
        n, qy, qx = raw.shape
        if index < n * qy * qx:
            i = index // (qy * qx)
            rest = index - i * qy * qx
            y = rest // qx
            x = rest - y * qx
            # the shift split into integer part and exact float32 fractions, as preprocess does
            dy = shifts[i, 0] if use_shifts else np.float32(0.0)
            dx = shifts[i, 1] if use_shifts else np.float32(0.0)
            floor_y = int(math.floor(dy))
            floor_x = int(math.floor(dx))
            out[i, y, x] = blurred(
                raw, i, y, x, taps, keep, use_shifts, floor_y, floor_x, dy - np.float32(floor_y), dx - np.float32(floor_x)
            )

    return kernel


def launch_blur_cuda(raw, taps, out, *, shifts=None, keep=None, stream=None, threads_per_block=None):
    """Blur a batch (device arrays; host arrays under the simulator) into ``out``, aligned by
    ``shifts`` and with the pixels where ``keep`` is 0 zeroed first (as ``kernels.blur``)."""
    total = raw.shape[0] * raw.shape[1] * raw.shape[2]
    if total == 0:
        return out
    use_shifts = shifts is not None
    if not use_shifts:
        shifts = _no_shifts()
    if keep is None:
        keep = _every_pixel(raw.shape[1], raw.shape[2])
    tpb = threads_per_block or THREADS_PER_BLOCK
    blocks = (total + tpb - 1) // tpb
    args = _targets.cuda_args(raw, shifts, use_shifts, keep, taps, out)
    blur_cuda_kernel()[blocks, tpb, _targets.cuda_stream(stream)](*args)
    return out


@functools.cache
def _every_pixel(qy: int, qx: int):
    return cuda.to_device(np.ones((qy, qx), np.float32))
