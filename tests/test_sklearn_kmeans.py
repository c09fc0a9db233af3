"""Full-dimensional CPU KMeans of exact mode (``gpu4d.kmeans.full`` with the numba
assign-and-sum kernel, the CPU backend's ``kmeans``) against scikit-learn run directly."""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from gpu4d.backend import get_backend
from gpu4d.kmeans.core import mean_feature_variance, row_squared_norms


def blobs(seed=0, n=3000, m=300, k=5, spread=0.6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (k, m))
    truth = rng.integers(k, size=n)
    x = centres[truth] + rng.normal(0, spread, (n, m))
    return x.astype(np.float32), truth


def cpu_kmeans(x, k, n_init, max_iter, tol, random_state, init=None):
    return get_backend("cpu").kmeans(
        x, k, n_init=n_init, max_iter=max_iter, tol=tol, random_state=random_state, init=init
    )


def test_mean_feature_variance_equals_numpy():
    x, _ = blobs(1, n=5000, m=77)
    x += 3.0  # an offset, so the formula's cancellation is exercised
    got = mean_feature_variance(np, x, row_squared_norms(np, x))
    want = float(np.var(x.astype(np.float64), axis=0).mean())
    assert got == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(row_squared_norms(np, x), (x.astype(np.float64) ** 2).sum(1), rtol=1e-5)


def test_same_init_same_fit_as_sklearn_and_tolerance_stops_where_sklearn_stops():
    # a loose tol, so that the tolerance (scaled by the mean feature variance, which gpu4d
    # computes without copying the matrix), not strict convergence, ends the runs; tol=0 runs
    # until no label changes
    x, _ = blobs(3, spread=4.0)
    init = x[:5].copy()
    for tol in (0.05, 0.01, 1e-4, 0.0):
        ours = cpu_kmeans(x, 5, n_init=1, max_iter=300, tol=tol, random_state=None, init=init)
        theirs = KMeans(5, init=init, n_init=1, tol=tol).fit(x)
        assert ours.n_iter == theirs.n_iter_, tol
        np.testing.assert_array_equal(ours.labels, theirs.labels_)
        assert ours.inertia == pytest.approx(theirs.inertia_, rel=1e-5)
        np.testing.assert_allclose(ours.centers, theirs.cluster_centers_, rtol=1e-4, atol=1e-4)
    # the loosest tolerance did stop early: the test would see a tolerance that is ignored
    loose = cpu_kmeans(x, 5, n_init=1, max_iter=300, tol=0.05, random_state=None, init=init)
    strict = cpu_kmeans(x, 5, n_init=1, max_iter=300, tol=0.0, random_state=None, init=init)
    assert loose.n_iter < strict.n_iter


def test_an_empty_cluster_is_moved_as_sklearn_moves_it():
    # one initial centre far from every point: its cluster is empty after the first assignment
    # and takes the point farthest from its centre (scikit-learn's rule)
    x, _ = blobs(6, n=800, m=20, k=3, spread=1.0)
    init = np.concatenate([x[:3], np.full((1, 20), 50.0, np.float32)])
    ours = cpu_kmeans(x, 4, n_init=1, max_iter=300, tol=0.0, random_state=None, init=init)
    theirs = KMeans(4, init=init, n_init=1, tol=0.0).fit(x)
    assert np.bincount(ours.labels, minlength=4).min() > 0
    assert adjusted_rand_score(theirs.labels_, ours.labels) == 1.0
    assert ours.inertia == pytest.approx(theirs.inertia_, rel=1e-5)


def test_cpu_kmeans_matches_sklearn_and_restores_the_features():
    x, truth = blobs(3)
    before = x.copy()
    fit = cpu_kmeans(x, 5, n_init=3, max_iter=300, tol=1e-4, random_state=0)
    reference = KMeans(5, n_init=3, random_state=0).fit(x)
    assert adjusted_rand_score(reference.labels_, fit.labels) >= 0.99
    assert adjusted_rand_score(truth, fit.labels) >= 0.99
    assert fit.inertia == pytest.approx(reference.inertia_, rel=1e-4)
    assert fit.labels.dtype == np.int32 and fit.centers.dtype == np.float32
    # centred in place for the fit and restored, as scikit-learn's copy_x=False: to float32 rounding
    np.testing.assert_allclose(x, before, rtol=0, atol=1e-6 * np.abs(before).max())


def test_reported_inertia_is_the_float64_one_despite_large_norms():
    # rows far from the origin: the float32 expansion ||z||^2 - 2 z.c + ||c||^2 that picks the
    # labels loses digits there; the reported inertia must not
    x, _ = blobs(7, n=2000, m=2000, k=3, spread=0.05)
    x += 20.0
    fit = cpu_kmeans(x, 3, n_init=2, max_iter=300, tol=1e-4, random_state=0)
    difference = x.astype(np.float64) - fit.centers[fit.labels].astype(np.float64)
    assert fit.inertia == pytest.approx(float((difference**2).sum()), rel=1e-6)


def test_same_seed_same_result_and_init_is_used():
    x, _ = blobs(4)
    a = cpu_kmeans(x, 4, 2, 300, 1e-4, random_state=7)
    b = cpu_kmeans(x, 4, 2, 300, 1e-4, random_state=7)
    np.testing.assert_array_equal(a.labels, b.labels)
    started = cpu_kmeans(x, 4, 1, 1, 0.0, random_state=None, init=a.centers)
    np.testing.assert_array_equal(started.labels, a.labels)


@pytest.mark.parametrize("seed", range(3))
def test_subsampled_trials_find_a_small_cluster(seed):
    # the trials fit a quarter of the 4000 rows (1024), holding ~20 of the small cluster's 80
    # (2% of the rows); the best of them, judged on all rows, starts the fit. On each of 3
    # scans it finds the small cluster, and its objective is as good as scikit-learn's
    rng = np.random.default_rng(9 + seed)
    sizes = [1500, 1400, 1020, 80]
    centres = rng.normal(0, 1, (4, 120))
    truth = np.repeat(np.arange(4), sizes)
    x = (centres[truth] + rng.normal(0, 0.8, (truth.size, 120))).astype(np.float32)
    fit = cpu_kmeans(x, 4, n_init=10, max_iter=300, tol=1e-4, random_state=seed)
    reference = KMeans(4, n_init=10, random_state=0).fit(x)
    assert adjusted_rand_score(truth, fit.labels) >= 0.99
    assert fit.inertia <= reference.inertia_ * (1 + 1e-4)


def test_patterns_sharing_a_large_common_part_still_converge():
    """Rows = a large common pattern + small differences (a detector movie's frames): distances
    computed around the origin would be float32 rounding noise; centred, Lloyd converges and
    finds scikit-learn's optimum."""
    rng = np.random.default_rng(3)
    common = rng.uniform(50, 100, 256).astype(np.float32)
    x = (common + rng.normal(0, 0.05, (300, 256)) + np.repeat([[0.02], [-0.02]], 150, axis=0)).astype(np.float32)
    fit = cpu_kmeans(x, 2, n_init=10, max_iter=300, tol=1e-4, random_state=0)
    reference = KMeans(2, n_init=10, random_state=0).fit(x)
    assert fit.n_iter < 300
    assert fit.inertia <= reference.inertia_ * (1 + 1e-4)
