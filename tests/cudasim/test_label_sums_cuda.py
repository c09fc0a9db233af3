"""The CUDA label-sum kernel against the CPU kernel, under numba's CUDA simulator."""

import numpy as np
import pytest

from gpu4d.kernels.label_sums import launch_label_sums_cpu

pytestmark = pytest.mark.cudasim


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("n_columns", [1, 2])
def test_cuda_label_sums_match_cpu(dtype, n_columns):
    from gpu4d.kernels.label_sums_cuda import launch_label_sums_cuda

    rng = np.random.default_rng(1)
    rows = (rng.random((9, 21)) * 200).astype(dtype)  # 21 columns: a partial block of 8
    labels = rng.integers(0, 4, (9, n_columns)).astype(np.int32)
    cpu, cuda = np.zeros((4, 21)), np.zeros((4, 21))
    cpu_squares, cuda_squares = np.zeros(21), np.zeros(21)
    launch_label_sums_cpu(rows, labels, cpu, cpu_squares)
    launch_label_sums_cuda(rows, labels, cuda, cuda_squares, threads_per_block=8, rows_per_block=4)
    np.testing.assert_allclose(cuda, cpu, rtol=1e-12)
    np.testing.assert_allclose(cuda_squares, cpu_squares, rtol=1e-12)
    without = np.zeros((4, 21))
    launch_label_sums_cuda(rows, labels, without, threads_per_block=8, rows_per_block=4)
    np.testing.assert_allclose(without, cpu, rtol=1e-12)


@pytest.mark.parametrize("n, m, rows_per_block", [(1, 3, 4), (97, 5, 8), (257, 3, 16), (13, 9, 1)])
def test_odd_sizes_and_label_runs(n, m, rows_per_block):
    """Row counts 1/97/257 in partial row blocks; labels in runs (as scan order gives) and
    alternating, so a run ends inside a block, at its end and at every row."""
    from gpu4d.kernels.label_sums_cuda import launch_label_sums_cuda

    rng = np.random.default_rng(n)
    rows = rng.integers(0, 255, (n, m)).astype(np.uint8)
    runs = np.repeat(rng.integers(0, 5, n // 3 + 1), 3)[:n]
    labels = np.stack([runs, np.arange(n) % 5], axis=1).astype(np.int32)
    cpu, cuda = np.zeros((5, m)), np.zeros((5, m))
    cpu_squares, cuda_squares = np.zeros(m), np.zeros(m)
    launch_label_sums_cpu(rows, labels, cpu, cpu_squares)
    launch_label_sums_cuda(rows, labels, cuda, cuda_squares, threads_per_block=2, rows_per_block=rows_per_block)
    np.testing.assert_allclose(cuda, cpu, rtol=1e-12)
    np.testing.assert_allclose(cuda_squares, cpu_squares, rtol=1e-12)
    # and an independent reference: the one-hot product in float64
    for c in range(2):
        one_hot = labels[:, c][:, None] == np.arange(5)[None, :]
        expected = one_hot.T.astype(np.float64) @ rows.astype(np.float64)
        if c == 0:
            both = expected
        else:
            both = both + expected
    np.testing.assert_allclose(cuda, both, rtol=1e-12)
