"""The Lloyd-step kernel against numpy float64, KMeans with it against KMeans without, and the
core's weighted k-means++ and Lloyd against scikit-learn's ``sample_weight`` and against
repeated rows."""

import numpy as np
import pytest

from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from gpu4d.backend import get_backend
from gpu4d.kernels.lloyd import assign_and_sum_cpu
from gpu4d.kmeans.core import assign, kmeans, kmeans_plusplus, lloyd


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


def weighted_points(seed, n=400, c=6, k=4):
    rng = np.random.default_rng(seed)
    z, _ = points(seed, n=n, c=c, k=k)
    return z.astype(np.float64), rng.integers(1, 5, size=n).astype(np.float64)


@pytest.mark.parametrize("seed", [5, 6])
def test_weighted_lloyd_equals_sklearn_sample_weight_and_repeated_rows(seed):
    z, weights = weighted_points(seed)
    init = z[:4].copy()
    fit = lloyd(np, z, init, max_iter=300, tol_abs=0.0, weights=weights)
    theirs = KMeans(4, init=init, n_init=1, tol=0.0).fit(z, sample_weight=weights)
    np.testing.assert_array_equal(fit.labels, theirs.labels_)
    np.testing.assert_allclose(fit.centers, theirs.cluster_centers_, rtol=1e-10, atol=1e-10)
    assert fit.inertia == pytest.approx(theirs.inertia_, rel=1e-10)
    assert fit.n_iter == theirs.n_iter_
    # integer weights are repeated rows
    repeated = np.repeat(z, weights.astype(int), axis=0)
    plain = lloyd(np, repeated, init, max_iter=300, tol_abs=0.0)
    np.testing.assert_allclose(fit.centers, plain.centers, rtol=1e-10, atol=1e-10)
    assert fit.inertia == pytest.approx(plain.inertia, rel=1e-10)


def test_weighted_kmeans_plusplus_draws_in_proportion_to_weight():
    # the first centre is drawn with probability ~ weight; later ones never among rows of
    # weight 0, which add nothing to the weighted potential
    z, _ = points(7, n=60, c=3)
    z = z.astype(np.float64)
    weights = np.zeros(60)
    weights[:4] = [1.0, 2.0, 3.0, 4.0]
    rng = np.random.default_rng(0)
    norms = np.einsum("ij,ij->i", z, z)
    draws = [kmeans_plusplus(np, z, norms, 1, rng, weights=weights)[0] for _ in range(4000)]
    chosen = np.array([int(np.flatnonzero((z == d).all(axis=1))[0]) for d in draws])
    shares = np.bincount(chosen, minlength=60) / len(chosen)
    np.testing.assert_allclose(shares[:4], weights[:4] / weights.sum(), atol=0.03)
    assert shares[4:].sum() == 0
    for _ in range(20):
        centres = kmeans_plusplus(np, z, norms, 3, rng, weights=weights)
        rows = [int(np.flatnonzero((z == c).all(axis=1))[0]) for c in centres]
        assert max(rows) < 4 and len(set(rows)) == 3


def test_weighted_kmeans_finds_the_clusters_and_keeps_a_warm_start():
    z, weights = weighted_points(8, n=900, k=4)
    fit = kmeans(np, z, 4, n_init=4, max_iter=100, tol=0.0, rng=np.random.default_rng(1),
                 weights=weights, dtype=np.float64)
    reference = KMeans(4, n_init=10, random_state=0).fit(z, sample_weight=weights)
    assert fit.centers.dtype == np.float64 and fit.labels.dtype == np.int32
    assert adjusted_rand_score(reference.labels_, fit.labels) == 1.0
    assert fit.inertia == pytest.approx(reference.inertia_, rel=1e-9)
    # started only from the converged centres (no k-means++ run), it stays there
    again = kmeans(np, z, 4, n_init=0, max_iter=100, tol=0.0, rng=np.random.default_rng(2),
                   warm_start=fit.centers, weights=weights, dtype=np.float64)
    np.testing.assert_array_equal(again.labels, fit.labels)
    assert again.n_iter == 1


def test_assign_matches_numpy_float64():
    z, centres = points(9, n=301)
    labels, distances = assign(np, z, centres)
    full = ((z[:, None, :].astype(np.float64) - centres[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, full.argmin(axis=1))
    np.testing.assert_allclose(distances, full.min(axis=1), rtol=1e-4, atol=1e-3)
