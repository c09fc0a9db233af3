"""Sums of rows per label on the GPU (numba CUDA).

Same inputs and results as ``kernels.label_sums`` (see there); imported only by the GPU engine
and by the simulator tests, because it imports ``numba.cuda``.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import cuda

from . import _targets

#: Threads per block along the columns: a warp reads 32 consecutive values of a row (coalesced).
THREADS_PER_BLOCK = 128
#: Rows per block. The grid is (column blocks) x (row blocks): a (2,000 x 20,000) batch makes
#: 157 x 32 blocks, enough to fill any GPU, where one thread per column over every row made
#: 79 blocks (fewer than an H100's 132 SMs), each thread a chain of 2,000 dependent adds.
ROWS_PER_BLOCK = 64


@functools.cache
def label_sums_cuda_kernel():
    """Build the CUDA kernel: thread (column j, row block b) adds rows of block b at column j.

    Patterns arrive in scan order, so neighbouring rows mostly share their label: a thread sums
    a run of equal labels in a register and adds it to ``sums`` with one float64 atomic when the
    label changes (and at the end of its rows). Different blocks of rows meet only in those
    atomics; the order of the additions is not fixed, so sums agree with the CPU kernel's to
    float64 round-off, not bit for bit.
    """
    float64 = np.float64

    @cuda.jit
    def kernel(rows, labels, sums, column_squares, rows_per_block):
        j = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        first = cuda.blockIdx.y * rows_per_block
        if j >= rows.shape[1] or first >= rows.shape[0]:
            return
        stop = min(rows.shape[0], first + rows_per_block)
        for c in range(labels.shape[1]):
            current = labels[first, c]
            run = float64(0.0)
            for i in range(first, stop):
                label = labels[i, c]
                if label != current:
                    cuda.atomic.add(sums, (current, j), run)
                    current = label
                    run = float64(0.0)
                run += float64(rows[i, j])
            cuda.atomic.add(sums, (current, j), run)
        if column_squares.shape[0] > 0:
            squares = float64(0.0)
            for i in range(first, stop):
                value = float64(rows[i, j])
                squares += value * value
            cuda.atomic.add(column_squares, j, squares)

    return kernel


@functools.cache
def _no_squares():
    """The empty ``column_squares`` of a launch without them: made once, not per launch."""
    return cuda.to_device(np.zeros(0, np.float64))


def launch_label_sums_cuda(
    rows, labels, sums, column_squares=None, *, stream=None, threads_per_block=None, rows_per_block=None
):
    """Launch the CUDA kernel over a batch (device or, under the simulator, host arrays).

    ``stream=None`` launches on the stream CuPy considers current (``_targets.cuda_stream``).
    """
    tpb = threads_per_block or THREADS_PER_BLOCK
    rpb = rows_per_block or ROWS_PER_BLOCK
    n, m = rows.shape
    if n == 0 or m == 0:
        return sums
    if column_squares is None:
        column_squares = _no_squares()
    grid = ((m + tpb - 1) // tpb, (n + rpb - 1) // rpb)
    args = _targets.cuda_args(rows, labels, sums, column_squares, rpb)
    label_sums_cuda_kernel()[grid, tpb, _targets.cuda_stream(stream)](*args)
    return sums
