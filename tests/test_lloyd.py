"""The Lloyd-step kernel against numpy float64, and KMeans with it against KMeans without."""

import numpy as np
import pytest

from gpu4d.backend import get_backend
from gpu4d.kernels.lloyd import assign_and_sum_cpu
from gpu4d.xp_kmeans import kmeans


def points(seed, n=500, c=5, k=4):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(k, c))
    z = (centres[rng.integers(0, k, n)] + rng.normal(size=(n, c))).astype(np.float32)
    return z, rng.normal(scale=3.0, size=(k + 2, c)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_assign_and_sum_matches_numpy_float64(seed):
    z, centres = points(seed)
    dots = z @ centres.T
    norms = np.einsum("ij,ij->i", centres, centres)
    labels, sums, counts = assign_and_sum_cpu(dots, norms, z)
    distances = ((z[:, None, :].astype(np.float64) - centres[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, distances.argmin(axis=1))  # no near ties in this data
    one_hot = np.eye(centres.shape[0])[labels]
    np.testing.assert_allclose(sums, one_hot.T @ z.astype(np.float64), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(counts, one_hot.sum(axis=0))


def test_ties_go_to_the_first_centre():
    z = np.zeros((3, 2), np.float32)
    centres = np.array([[1, 0], [0, 1], [1, 0]], np.float32)  # all three equally far
    labels, _, counts = assign_and_sum_cpu(z @ centres.T, np.einsum("ij,ij->i", centres, centres), z)
    assert labels.tolist() == [0, 0, 0] and counts.tolist() == [3, 0, 0]


@pytest.mark.parametrize("seed", [3, 4])
def test_kmeans_with_the_kernel_equals_kmeans_without(seed):
    z, _ = points(seed, n=2000, k=5)
    runs = [
        kmeans(np, z, 6, n_init=3, max_iter=300, tol=1e-4, rng=np.random.default_rng(seed), assign_and_sum=step)
        for step in (None, get_backend("cpu").assign_and_sum)
    ]
    np.testing.assert_array_equal(runs[0].labels, runs[1].labels)
    np.testing.assert_allclose(runs[0].centers, runs[1].centers, rtol=1e-5, atol=1e-6)
    assert runs[0].inertia == pytest.approx(runs[1].inertia, rel=1e-6)
