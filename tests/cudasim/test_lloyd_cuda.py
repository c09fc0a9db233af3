"""The CUDA Lloyd-step kernel against the CPU kernel, under numba's CUDA simulator."""

import numpy as np
import pytest

from gpu4d.kernels.lloyd import assign_and_sum_cpu

pytestmark = pytest.mark.cudasim


def test_cuda_assign_and_sum_matches_cpu():
    from gpu4d.kernels.lloyd_cuda import launch_assign_and_sum_cuda

    rng = np.random.default_rng(2)
    z = rng.normal(size=(37, 3)).astype(np.float32)  # 37 points: a partial block of 16
    centres = rng.normal(size=(5, 3)).astype(np.float32)
    dots, norms = z @ centres.T, np.einsum("ij,ij->i", centres, centres)
    labels, sums, counts = assign_and_sum_cpu(dots, norms, z)
    cuda_labels = np.full(37, -1, np.int32)
    cuda_sums = np.zeros((5, 3))
    cuda_counts = np.zeros(5, np.int64)
    launch_assign_and_sum_cuda(dots, norms, z, cuda_labels, cuda_sums, cuda_counts, threads_per_block=16)
    np.testing.assert_array_equal(cuda_labels, labels)
    np.testing.assert_allclose(cuda_sums, sums, rtol=1e-12)  # atomics in any order: float64
    np.testing.assert_array_equal(cuda_counts, counts)
