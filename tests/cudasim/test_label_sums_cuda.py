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
    launch_label_sums_cuda(rows, labels, cuda, cuda_squares, threads_per_block=8)
    np.testing.assert_allclose(cuda, cpu, rtol=1e-12)
    np.testing.assert_allclose(cuda_squares, cpu_squares, rtol=1e-12)
    without = np.zeros((4, 21))
    launch_label_sums_cuda(rows, labels, without, threads_per_block=8)
    np.testing.assert_allclose(without, cpu, rtol=1e-12)
