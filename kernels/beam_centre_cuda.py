"""Direct-beam centre of every pattern of a batch on the GPU (numba CUDA).

Same inputs and results as ``kernels.beam_centre`` (see there); imported only by the GPU engine
and by the simulator tests, because it imports ``numba.cuda``.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import cuda

from . import _targets, centre_math, pixel_math

#: Threads per block (one block per pattern). A power of two for the tree reductions; a beam
#: window holds a few hundred pixels, so more threads would mostly idle.
THREADS_PER_BLOCK = 128


@functools.cache
def beam_centre_cuda_kernel(threads_per_block: int = THREADS_PER_BLOCK):
    """Build the CUDA kernel: a block per pattern, threads stride over the window's bounding box.

    Consecutive threads read consecutive pixels of a row (coalesced). Two shared-memory tree
    reductions follow: the window maximum, then the three weighted sums, in float64 so the
    result matches the CPU kernel to round-off (a few hundred additions per pattern: the cost
    is negligible even where float64 is slow).
    """
    read = _targets.for_cuda(pixel_math.read_pixel)
    start_of = _targets.for_cuda(centre_math.window_start)
    stop_of = _targets.for_cuda(centre_math.window_stop)
    inside = _targets.for_cuda(centre_math.in_window)
    weight_of = _targets.for_cuda(centre_math.threshold_weight)
    coordinate = _targets.for_cuda(centre_math.centre_coordinate)
    tpb = threads_per_block
    float64 = np.float64

    @cuda.jit(device=True)
    def reduce_sum(partial, t):
        """Tree-sum the three rows of ``partial`` (3, tpb) into column 0."""
        stride = tpb // 2
        while stride > 0:
            if t < stride:
                partial[0, t] += partial[0, t + stride]
                partial[1, t] += partial[1, t + stride]
                partial[2, t] += partial[2, t + stride]
            cuda.syncthreads()
            stride //= 2

    @cuda.jit
    def kernel(raw, centres, radius, threshold, out):
        i = cuda.blockIdx.x
        t = cuda.threadIdx.x
        partial = cuda.shared.array((3, tpb), float64)
        valid = i < raw.shape[0]
        k = 0 if centres.shape[0] == 1 else i
        cy = centres[k, 0] if valid else 0.0
        cx = centres[k, 1] if valid else 0.0
        y0 = start_of(cy, radius)
        x0 = start_of(cx, radius)
        height = max(0, stop_of(cy, radius, raw.shape[1]) - y0)
        width = max(0, stop_of(cx, radius, raw.shape[2]) - x0)
        n_box = height * width if valid else 0

        # pass 1: the window maximum
        peak = 0.0
        for j in range(t, n_box, tpb):
            y = y0 + j // width
            x = x0 + j % width
            if inside(y, x, cy, cx, radius):
                peak = max(peak, read(raw, i, y, x))
        partial[0, t] = peak
        cuda.syncthreads()
        stride = tpb // 2
        while stride > 0:
            if t < stride:
                partial[0, t] = max(partial[0, t], partial[0, t + stride])
            cuda.syncthreads()
            stride //= 2
        peak = partial[0, 0]
        cuda.syncthreads()  # every thread has read the peak before the sums overwrite it

        # pass 2: weighted sums relative to the window centre
        level = threshold * peak
        total = 0.0
        sum_y = 0.0
        sum_x = 0.0
        if peak > 0.0:
            for j in range(t, n_box, tpb):
                y = y0 + j // width
                x = x0 + j % width
                if inside(y, x, cy, cx, radius):
                    weight = weight_of(read(raw, i, y, x), level)
                    total += weight
                    sum_y += weight * (y - cy)
                    sum_x += weight * (x - cx)
        partial[0, t] = total
        partial[1, t] = sum_y
        partial[2, t] = sum_x
        cuda.syncthreads()
        reduce_sum(partial, t)
        if valid and t == 0:
            out[i, 0] = coordinate(cy, partial[1, 0], partial[0, 0])
            out[i, 1] = coordinate(cx, partial[2, 0], partial[0, 0])

    return kernel


def launch_beam_centre_cuda(
    raw, centres, radius, threshold, out, *, stream=None, threads_per_block=None
):
    """Launch the CUDA kernel over a batch (device or, under the simulator, host arrays).

    ``stream=None`` launches on the stream CuPy considers current (``_targets.cuda_stream``).
    ``threads_per_block`` must be a power of two (default ``THREADS_PER_BLOCK``).
    """
    tpb = threads_per_block or THREADS_PER_BLOCK
    if tpb & (tpb - 1):
        raise ValueError(f"threads_per_block={tpb} should be a power of two.")
    n = raw.shape[0]
    if n == 0:
        return out
    args = _targets.cuda_args(raw, centres, float(radius), float(threshold), out)
    beam_centre_cuda_kernel(tpb)[n, tpb, _targets.cuda_stream(stream)](*args)
    return out
