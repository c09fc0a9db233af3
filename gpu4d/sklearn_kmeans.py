"""Full-dimensional KMeans on the CPU: scikit-learn's Lloyd, with seeding and tolerance made to
fit a feature matrix that is most of the machine's memory.

Two things of ``sklearn.cluster.KMeans`` do not scale to a (31,132 x 20,176) float32 matrix:

* its k-means++ upcasts float32 rows to float64 chunk by chunk: 12 s for k = 6 against 0.9 s
  per Lloyd iteration. ``xp_kmeans.kmeans_plusplus`` (the same greedy seeding, float32 matrix
  products) seeds instead, and KMeans starts from those centres.
* its tolerance scale, the mean per-feature variance, comes from ``np.var(X, axis=0)``, which
  allocates a second matrix of X's size. ``xp_kmeans.mean_feature_variance`` computes the same number
  without copying, and ``_KnownVarianceKMeans`` uses it.

And ``n_init`` full fits would cost ``n_init`` times one: here each of the ``n_init`` trials
fits a row subsample, the trial whose centres have the lowest inertia over all rows starts one
Lloyd run over all rows.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

from . import xp_kmeans
from .backend import KMeansFit

#: k-means++ candidates per seed. scikit-learn's default (2 + ln k) often puts two seeds in one
#: large grain and none in a small defect region; 10 candidates made that rare on the synthetic
#: scans. With float32 seeding the extra candidates cost little.
KMEANS_PLUSPLUS_TRIALS = 10
#: Rows each trial fit runs on (at least ``INIT_SAMPLE_PER_CLUSTER`` per cluster).
INIT_SAMPLE = 4096
INIT_SAMPLE_PER_CLUSTER = 256


class _KnownVarianceKMeans(KMeans):
    """scikit-learn KMeans whose tolerance scale is given (``known_mean_variance``) instead of
    computed with ``np.var(X, axis=0)``, which would copy X. Otherwise scikit-learn's own fit."""

    known_mean_variance = 0.0

    def _check_params_vs_input(self, X, *args, **kwargs):
        tol = self.tol
        self.tol = 0  # makes scikit-learn skip its np.var(X) ...
        try:
            super()._check_params_vs_input(X, *args, **kwargs)
        finally:
            self.tol = tol
        self._tol = self.known_mean_variance * tol  # ... and this is what it would have set


def sklearn_kmeans(features, n_clusters, n_init, max_iter, tol, random_state, init=None) -> KMeansFit:
    """KMeans on all rows, started from the best of ``n_init`` trial runs, or from ``init``.

    Each trial is float32 k-means++ seeding and Lloyd (scikit-learn) on a random subsample of
    rows (``INIT_SAMPLE``); the trial whose centres give the lowest inertia over *all* rows
    starts the final Lloyd run over all rows. Trials cost one pass over ``features`` each, not
    a full fit, so many of them fit in the time of one full fit: a small region (a defect of a
    few percent of the scan) is then rarely lost to a local optimum that merges it into a grain.

    ``features`` (n, m) float32 C-contiguous is centred in place during the final fit and
    restored (``copy_x=False``): no second matrix of its size is made.
    """
    features = np.ascontiguousarray(features, dtype=np.float32)
    squared_norms = xp_kmeans.row_squared_norms(np, features)
    variance = xp_kmeans.mean_feature_variance(np, features, squared_norms) if tol > 0 else 0.0
    if init is None:
        rng = np.random.default_rng(random_state)
        init = _best_trial_centres(features, squared_norms, n_clusters, n_init, max_iter, tol, variance, rng)
    model = _fitter(n_clusters, np.asarray(init, np.float32), max_iter, tol, variance).fit(features)
    return KMeansFit(
        labels=model.labels_.astype(np.int32),
        centers=model.cluster_centers_.astype(np.float32),
        inertia=float(model.inertia_),
        n_iter=int(model.n_iter_),
    )


def _fitter(n_clusters, init, max_iter, tol, variance) -> _KnownVarianceKMeans:
    model = _KnownVarianceKMeans(n_clusters, init=init, n_init=1, max_iter=max_iter, tol=tol, copy_x=False)
    model.known_mean_variance = variance
    return model


def _best_trial_centres(features, squared_norms, n_clusters, n_trials, max_iter, tol, variance, rng):
    """The centres, among ``n_trials`` subsample fits, of lowest inertia over all rows.

    Each trial fits a random quarter of the rows (at most ``INIT_SAMPLE``, at least
    ``INIT_SAMPLE_PER_CLUSTER`` per cluster), with the tolerance scale of all rows.
    """
    n = features.shape[0]
    sample_size = min(n, max(INIT_SAMPLE_PER_CLUSTER * n_clusters, min(INIT_SAMPLE, n // 4)))
    best, best_inertia = None, np.inf
    for _ in range(n_trials):
        rows = np.sort(rng.choice(n, sample_size, replace=False)) if sample_size < n else None
        sample = features if rows is None else features[rows]
        sample_norms = squared_norms if rows is None else squared_norms[rows]
        seeds = xp_kmeans.kmeans_plusplus(
            np, sample, sample_norms, n_clusters, rng, n_trials=KMEANS_PLUSPLUS_TRIALS
        )
        centres = _fitter(n_clusters, seeds, max_iter, tol, variance).fit(sample)
        centres = centres.cluster_centers_.astype(np.float32)
        inertia = xp_kmeans.full_inertia(np, features, squared_norms, centres)
        if inertia < best_inertia:
            best, best_inertia = centres, inertia
    return best
