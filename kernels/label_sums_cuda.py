"""Sums of rows per label on the GPU (numba CUDA).

Same inputs and results as ``kernels.label_sums`` (see there); imported only by the GPU engine
and by the simulator tests, because it imports ``numba.cuda``.
"""

from __future__ import annotations

import functools

import numpy as np

from numba import cuda

#: Threads per block; a thread per column.
THREADS_PER_BLOCK = 256


@functools.cache
def label_sums_cuda_kernel():
    """Build the CUDA kernel: a thread per column adds the rows in order, so no two threads
    write the same sum (no atomics) and a warp reads consecutive columns of a row (coalesced)."""
    float64 = np.float64

    @cuda.jit
    def kernel(rows, labels, sums, column_squares):
        j = cuda.grid(1)
        if j >= rows.shape[1]:
            return
        squares = column_squares.shape[0] > 0
        for i in range(rows.shape[0]):
            value = rows[i, j]
            for c in range(labels.shape[1]):
                sums[labels[i, c], j] += value
            if squares:
                wide = float64(value)
                column_squares[j] += wide * wide

    return kernel


def launch_label_sums_cuda(rows, labels, sums, column_squares=None, *, stream=0, threads_per_block=None):
    """Launch the CUDA kernel over a batch (device or, under the simulator, host arrays)."""
    tpb = threads_per_block or THREADS_PER_BLOCK
    if rows.shape[0] == 0 or rows.shape[1] == 0:
        return sums
    if column_squares is None:
        column_squares = cuda.to_device(np.zeros(0, np.float64))
    blocks = (rows.shape[1] + tpb - 1) // tpb
    label_sums_cuda_kernel()[blocks, tpb, stream](rows, labels, sums, column_squares)
    return sums
