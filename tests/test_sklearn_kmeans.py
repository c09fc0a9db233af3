"""Full-dimensional CPU KMeans: scikit-learn's Lloyd with float32 seeding and a copy-free
tolerance, against scikit-learn run directly."""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from gpu4d.sklearn_kmeans import (
    _KnownVarianceKMeans,
    mean_feature_variance,
    row_squared_norms,
    sklearn_kmeans,
)


def blobs(seed=0, n=3000, m=300, k=5, spread=0.6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (k, m))
    truth = rng.integers(k, size=n)
    x = centres[truth] + rng.normal(0, spread, (n, m))
    return x.astype(np.float32), truth


def test_mean_feature_variance_equals_numpy():
    x, _ = blobs(1, n=5000, m=77)
    x += 3.0  # an offset, so the formula's cancellation is exercised
    got = mean_feature_variance(x, row_squared_norms(x))
    want = float(np.var(x.astype(np.float64), axis=0).mean())
    assert got == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(row_squared_norms(x), (x.astype(np.float64) ** 2).sum(1), rtol=1e-5)


def test_known_variance_kmeans_is_sklearn_kmeans():
    # a loose tol, so that the tolerance (not strict convergence) ends the runs
    x, _ = blobs(2, spread=1.5)
    init = x[:5].copy()
    ours = _KnownVarianceKMeans(5, init=init, n_init=1, tol=0.05, copy_x=False)
    ours.known_mean_variance = mean_feature_variance(x, row_squared_norms(x))
    ours.fit(x)
    theirs = KMeans(5, init=init, n_init=1, tol=0.05).fit(x)
    assert ours._tol == pytest.approx(theirs._tol, rel=1e-5)
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_array_equal(ours.labels_, theirs.labels_)
    assert ours.inertia_ == pytest.approx(theirs.inertia_, rel=1e-5)


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


def test_subsampled_trials_find_a_small_cluster(monkeypatch):
    # trials fit 600 of the 4000 rows; the best of them, judged on all rows, starts the fit
    import gpu4d.sklearn_kmeans as module

    monkeypatch.setattr(module, "INIT_SAMPLE", 600)
    monkeypatch.setattr(module, "INIT_SAMPLE_PER_CLUSTER", 10)
    rng = np.random.default_rng(9)
    sizes = [1500, 1400, 1020, 80]  # the last cluster is 2% of the rows
    centres = rng.normal(0, 1, (4, 120))
    truth = np.repeat(np.arange(4), sizes)
    x = (centres[truth] + rng.normal(0, 0.8, (truth.size, 120))).astype(np.float32)
    fit = sklearn_kmeans(x, 4, n_init=10, max_iter=300, tol=1e-4, random_state=1)
    reference = KMeans(4, n_init=10, random_state=0).fit(x)
    assert adjusted_rand_score(truth, fit.labels) >= 0.99
    assert fit.inertia <= reference.inertia_ * (1 + 1e-4)
