"""Full-dimensional CPU KMeans: scikit-learn's Lloyd with float32 seeding and a copy-free
tolerance, against scikit-learn run directly."""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from gpu4d.sklearn_kmeans import sklearn_kmeans
from gpu4d.xp_kmeans import mean_feature_variance, row_squared_norms


def blobs(seed=0, n=3000, m=300, k=5, spread=0.6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (k, m))
    truth = rng.integers(k, size=n)
    x = centres[truth] + rng.normal(0, spread, (n, m))
    return x.astype(np.float32), truth


def test_mean_feature_variance_equals_numpy():
    x, _ = blobs(1, n=5000, m=77)
    x += 3.0  # an offset, so the formula's cancellation is exercised
    got = mean_feature_variance(np, x, row_squared_norms(np, x))
    want = float(np.var(x.astype(np.float64), axis=0).mean())
    assert got == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(row_squared_norms(np, x), (x.astype(np.float64) ** 2).sum(1), rtol=1e-5)


def test_tolerance_stops_lloyd_where_sklearn_stops():
    # a loose tol, so that the tolerance (scaled by the mean feature variance, which gpu4d
    # computes without copying the matrix), not strict convergence, ends the runs
    x, _ = blobs(3, spread=4.0)
    init = x[:5].copy()
    for tol in (0.05, 0.01, 1e-4):
        ours = sklearn_kmeans(x, 5, n_init=1, max_iter=300, tol=tol, random_state=None, init=init)
        theirs = KMeans(5, init=init, n_init=1, tol=tol).fit(x)
        assert ours.n_iter == theirs.n_iter_, tol
        np.testing.assert_array_equal(ours.labels, theirs.labels_)
        assert ours.inertia == pytest.approx(theirs.inertia_, rel=1e-5)
    # the loosest tolerance did stop early: the test would see a tolerance that is ignored
    loose = sklearn_kmeans(x, 5, n_init=1, max_iter=300, tol=0.05, random_state=None, init=init)
    strict = sklearn_kmeans(x, 5, n_init=1, max_iter=300, tol=0.0, random_state=None, init=init)
    assert loose.n_iter < strict.n_iter


def test_sklearn_kmeans_matches_sklearn_and_leaves_features_unchanged():
    x, truth = blobs(3)
    before = x.copy()
    fit = sklearn_kmeans(x, 5, n_init=3, max_iter=300, tol=1e-4, random_state=0)
    reference = KMeans(5, n_init=3, random_state=0).fit(x)
    assert adjusted_rand_score(reference.labels_, fit.labels) >= 0.99
    assert adjusted_rand_score(truth, fit.labels) >= 0.99
    assert fit.inertia == pytest.approx(reference.inertia_, rel=1e-4)
    assert fit.labels.dtype == np.int32 and fit.centers.dtype == np.float32
    np.testing.assert_allclose(x, before, atol=1e-5)  # centred in place, then restored


def test_same_seed_same_result_and_init_is_used():
    x, _ = blobs(4)
    a = sklearn_kmeans(x, 4, 2, 300, 1e-4, random_state=7)
    b = sklearn_kmeans(x, 4, 2, 300, 1e-4, random_state=7)
    np.testing.assert_array_equal(a.labels, b.labels)
    started = sklearn_kmeans(x, 4, 1, 1, 0.0, random_state=None, init=a.centers)
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
    fit = sklearn_kmeans(x, 4, n_init=10, max_iter=300, tol=1e-4, random_state=seed)
    reference = KMeans(4, n_init=10, random_state=0).fit(x)
    assert adjusted_rand_score(truth, fit.labels) >= 0.99
    assert fit.inertia <= reference.inertia_ * (1 + 1e-4)
