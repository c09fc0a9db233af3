"""Full-dimensional KMeans on the CPU: scikit-learn's Lloyd, with seeding and tolerance made to
fit a feature matrix that is most of the machine's memory.

Two things of ``sklearn.cluster.KMeans`` do not scale to a (31,132 x 20,176) float32 matrix:

* its k-means++ upcasts float32 rows to float64 chunk by chunk: 12 s for k = 6 against 0.9 s
  per Lloyd iteration. ``xp_kmeans.kmeans_plusplus`` (the same greedy seeding, float32 matrix
  products) seeds instead, and KMeans starts from those centres.
* its tolerance scale, the mean per-feature variance, comes from ``np.var(X, axis=0)``, which
  allocates a second matrix of X's size. ``mean_feature_variance`` computes the same number
  without copying, and ``_KnownVarianceKMeans`` uses it.
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
#: Rows per chunk when reducing over the feature matrix.
_CHUNK_ROWS = 4096


def row_squared_norms(features: np.ndarray) -> np.ndarray:
    """(n,) float32 squared norms of the rows, chunk by chunk (no temporary of X's size)."""
    norms = np.empty(features.shape[0], np.float32)
    for start in range(0, features.shape[0], _CHUNK_ROWS):
        chunk = features[start : start + _CHUNK_ROWS]
        norms[start : start + chunk.shape[0]] = np.einsum("ij,ij->i", chunk, chunk)
    return norms


def mean_feature_variance(features: np.ndarray, squared_norms: np.ndarray) -> float:
    """``np.var(features, axis=0).mean()`` in float64, without a copy of ``features``.

    mean_j var_j = sum_ij x_ij^2 / (n m) - mean_j mu_j^2.
    """
    n, m = features.shape
    column_sum = np.zeros(m, np.float64)
    for start in range(0, n, _CHUNK_ROWS):
        column_sum += features[start : start + _CHUNK_ROWS].sum(axis=0, dtype=np.float64)
    mu = column_sum / n
    return max(0.0, float(squared_norms.sum(dtype=np.float64)) / (n * m) - float(mu @ mu) / m)


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
    """Best of ``n_init`` Lloyd runs from float32 k-means++ seeds, or one run from ``init``.

    ``features`` (n, m) float32 C-contiguous is centred in place during each fit and restored
    (``copy_x=False``): no second matrix of its size is made.
    """
    features = np.ascontiguousarray(features, dtype=np.float32)
    squared_norms = row_squared_norms(features)
    if init is not None:
        starts = [np.asarray(init, np.float32)]
    else:
        rng = np.random.default_rng(random_state)
        starts = [
            xp_kmeans.kmeans_plusplus(
                np, features, squared_norms, n_clusters, rng, n_trials=KMEANS_PLUSPLUS_TRIALS
            )
            for _ in range(n_init)
        ]
    variance = mean_feature_variance(features, squared_norms) if tol > 0 else 0.0
    best = None
    for start in starts:
        model = _KnownVarianceKMeans(n_clusters, init=start, n_init=1, max_iter=max_iter, tol=tol, copy_x=False)
        model.known_mean_variance = variance
        model.fit(features)
        if best is None or model.inertia_ < best.inertia_:
            best = model
    return KMeansFit(
        labels=best.labels_.astype(np.int32),
        centers=best.cluster_centers_.astype(np.float32),
        inertia=float(best.inertia_),
        n_iter=int(best.n_iter_),
    )
