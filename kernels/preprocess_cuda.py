"""Fused preprocessing of a batch of patterns on the GPU (numba CUDA).

Same inputs and results as ``kernels.preprocess`` (see there), to float32 round-off: the
kernel computes in float32 (``pixel_math``'s ``*_f32`` twins), where the CPU kernel sums the
normalization statistic in float64. Imported only by the GPU engine and by the simulator
tests, because it imports ``numba.cuda``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from . import _targets, pixel_math

#: Threads per block (one block per pattern). A power of two for the tree reduction.
THREADS_PER_BLOCK = 256


@functools.cache
def preprocess_cuda_kernel(threads_per_block: int = THREADS_PER_BLOCK):
    """Build the CUDA kernel: a block per pattern, threads stride over its kept pixels.

    Consecutive threads read consecutive kept pixels (coalesced for the unshifted case) and the
    normalization statistic is reduced in shared memory, so no warp shuffles are needed. All
    arithmetic is float32.
    """
    read = _targets.for_cuda(pixel_math.read_pixel_f32)
    bilinear = _targets.for_cuda(pixel_math.make_bilinear_pixel_f32(read))
    transform_value = _targets.for_cuda(pixel_math.transform_value_f32)
    accumulate = _targets.for_cuda(pixel_math.norm_accumulate)
    combine = _targets.for_cuda(pixel_math.norm_combine)
    scale_of = _targets.for_cuda(pixel_math.norm_scale_f32)
    tpb = threads_per_block
    float32 = np.float32

    @cuda.jit
    def kernel(raw, shifts, pixel_y, pixel_x, transform, norm, use_shifts, out):
        i = cuda.blockIdx.x
        t = cuda.threadIdx.x
        partial = cuda.shared.array(tpb, float32)
        n_kept = pixel_y.shape[0]
        acc = float32(0.0)
        if i < raw.shape[0]:
            # the shift split once per pattern: integer part, and exact float32 fractions
            dy = shifts[i, 0] if use_shifts else float32(0.0)
            dx = shifts[i, 1] if use_shifts else float32(0.0)
            floor_y = int(math.floor(dy))
            floor_x = int(math.floor(dx))
            wy = dy - float32(floor_y)
            wx = dx - float32(floor_x)
            for j in range(t, n_kept, tpb):
                if use_shifts:
                    value = bilinear(raw, i, pixel_y[j] + floor_y, pixel_x[j] + floor_x, wy, wx)
                else:
                    value = read(raw, i, pixel_y[j], pixel_x[j])
                value = transform_value(value, transform)
                out[i, j] = value
                acc = accumulate(acc, value, norm)
        partial[t] = acc
        cuda.syncthreads()
        stride = tpb // 2
        while stride > 0:
            if t < stride:
                partial[t] = combine(partial[t], partial[t + stride], norm)
            cuda.syncthreads()
            stride //= 2
        scale = scale_of(partial[0], norm)
        if i < raw.shape[0] and scale != float32(1.0):
            for j in range(t, n_kept, tpb):
                out[i, j] = out[i, j] * scale

    return kernel


@functools.cache
def _no_shifts():
    """The (1, 2) zero shifts of a launch without alignment: made once, not per launch."""
    return cuda.to_device(np.zeros((1, 2), np.float32))


def launch_preprocess_cuda(
    raw, shifts, pixel_y, pixel_x, transform, norm, out, *, stream=None, threads_per_block=None
):
    """Launch the CUDA kernel over a batch (device or, under the simulator, host arrays).

    ``stream=None`` launches on the stream CuPy considers current (``_targets.cuda_stream``).
    """
    tpb = threads_per_block or THREADS_PER_BLOCK
    use_shifts = shifts is not None
    if not use_shifts:
        shifts = _no_shifts()
    n = raw.shape[0]
    if n == 0:
        return out
    args = _targets.cuda_args(raw, shifts, pixel_y, pixel_x, transform, norm, use_shifts, out)
    preprocess_cuda_kernel(tpb)[n, tpb, _targets.cuda_stream(stream)](*args)
    return out
