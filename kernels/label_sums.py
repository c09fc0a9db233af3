"""Sums of rows per label on the CPU: ``sums[labels[i, l]] += rows[i]`` for every row i and
label column l.

The CUDA twin is ``kernels.label_sums_cuda``. The sweep's final pass uses it for the exact
centroids and mean patterns of every k: the rows of a batch (preprocessed or raw patterns)
are added to the sums of their cluster. It replaces a one-hot matrix product, which cost
2 x (clusters) flops per value and, for raw patterns, a float32 copy of each batch first.

Inputs of both kernels
----------------------
rows : (n, m) uint8, uint16, uint32, float32 or float64
    Converted to the sums' dtype on the fly.
labels : (n, L) int32
    Each row is added to the L rows ``labels[i, :]`` of ``sums``, each in [0, k).
sums : (k, m) float64
    Updated in place.
column_squares : (m,) float64, or (0,) for none
    ``column_squares[j] += rows[i, j] ** 2`` for every row: the patterns' squared norms, summed
    by column (for the total variance and the exact inertia), in the same read of the rows.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: Columns per parallel task on the CPU: the (k, BLOCK) sums of a task stay in cache.
BLOCK = 4096


@njit(parallel=True, cache=True)
def label_sums_cpu_kernel(rows, labels, sums, column_squares):
    """CPU kernel: a task per block of columns (no two tasks write the same sums), rows in
    order. The slices of one row and one sum are separate arrays to numba, so the inner loop
    compiles to SIMD code (indexing ``sums[label, j]`` directly ran about 5x slower)."""
    n, m = rows.shape
    n_blocks = (m + BLOCK - 1) // BLOCK
    squares = column_squares.shape[0] > 0
    for b in prange(n_blocks):
        start = b * BLOCK
        stop = min(m, start + BLOCK)
        for i in range(n):
            row = rows[i, start:stop]
            for c in range(labels.shape[1]):
                total = sums[labels[i, c], start:stop]
                for j in range(stop - start):
                    total[j] += row[j]
            if squares:
                square_sums = column_squares[start:stop]
                for j in range(stop - start):
                    value = np.float64(row[j])
                    square_sums[j] += value * value


def launch_label_sums_cpu(rows, labels, sums, column_squares=None):
    """Add each row of ``rows`` to ``sums`` at its labels, and its squares to
    ``column_squares`` if given (see the module)."""
    if column_squares is None:
        column_squares = _NO_SQUARES
    if rows.shape[0]:
        label_sums_cpu_kernel(rows, labels, sums, column_squares)
    return sums


_NO_SQUARES = np.zeros(0, np.float64)
