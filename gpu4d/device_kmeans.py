"""Full-dimensional KMeans of the GPU backend: the CPU's meaning of ``n_init``, ``tol`` and
``max_iter``, with cuML's Lloyd when it is installed and CuPy's (``xp_kmeans``) otherwise.

``n_init``: as on the CPU (``gpu4d.sklearn_kmeans``), ``n_init`` trial fits run on random
subsamples of the rows (k-means++ seeding with the same generator and candidates), the trial
whose centres have the lowest inertia over all rows starts one Lloyd run over all rows. cuML's
own ``n_init`` would instead repeat full fits: ten full fits for the default 10, where the
trials cost one pass over the matrix each (``benchmarks/ROOFLINE.md``).

``tol``: scikit-learn's, relative to the mean per-feature variance: Lloyd stops when the sum of
squared centre shifts is at most ``tol`` x that variance, or when no label changes. cuVS (cuML's
engine) reads ``tol`` as an absolute bound on the same sum, so it gets the scaled value; it
also stops when an iteration lowers the inertia by less than that fraction of it, a second test
that fires later than the shift test on preprocessed patterns (their variance is well below 1).
cuVS refuses ``tol <= 0``: ``tol=0`` (run until no label changes, as live's refinement asks)
becomes ``CUML_MIN_TOL``, which only an iteration that moves no centre meets.

``max_iter``: the same on both (the final fit's iterations; each trial has the same bound).

The functions work on any array module ``xp`` (CuPy on a GPU, numpy under the simulator).
"""

from __future__ import annotations

import numpy as np

from . import xp_kmeans
from .backend import KMeansFit
from .sklearn_kmeans import INIT_SAMPLE, INIT_SAMPLE_PER_CLUSTER, KMEANS_PLUSPLUS_TRIALS

#: The smallest tolerance handed to cuVS, which requires ``tol > 0``.
CUML_MIN_TOL = 1e-30


def device_kmeans(xp, features, n_clusters, *, n_init, max_iter, tol, random_state, init=None, engine="xp"):
    """KMeans of ``features`` (n, m) float32 on ``xp``'s device; a host ``KMeansFit``.

    ``engine``: ``"cuml"`` or ``"xp"`` (``xp_kmeans.lloyd``). ``init``: (k, m) centres to
    start the one fit from (no trials).
    """
    features = xp.ascontiguousarray(features, dtype=np.float32)
    squared_norms = xp_kmeans.row_squared_norms(xp, features)
    tol_abs = float(tol) * xp_kmeans.mean_feature_variance(xp, features, squared_norms) if tol > 0 else 0.0
    fit = _engine(engine)
    if init is None:
        rng = np.random.default_rng(random_state)
        init = _best_trial_centres(xp, features, squared_norms, n_clusters, n_init, max_iter, tol_abs, rng, fit)
    labels, centers, inertia, n_iter = fit(xp, features, squared_norms, xp.asarray(init, dtype=np.float32),
                                           max_iter, tol_abs)
    return KMeansFit(
        labels=_host(labels).astype(np.int32),
        centers=_host(centers).astype(np.float32),
        inertia=float(inertia),
        n_iter=int(n_iter),
    )


def cuml_tolerance(tol_abs: float) -> float:
    """cuVS's ``tol`` for scikit-learn's absolute tolerance ``tol_abs`` (see the module)."""
    return max(float(tol_abs), CUML_MIN_TOL)


def _best_trial_centres(xp, features, squared_norms, n_clusters, n_trials, max_iter, tol_abs, rng, fit):
    """The centres, among ``n_trials`` subsample fits, of lowest inertia over all rows; the
    subsample sizes and random draws are the CPU's (``sklearn_kmeans._best_trial_centres``)."""
    n = features.shape[0]
    sample_size = min(n, max(INIT_SAMPLE_PER_CLUSTER * n_clusters, min(INIT_SAMPLE, n // 4)))
    best, best_inertia = None, np.inf
    for _ in range(n_trials):
        rows = np.sort(rng.choice(n, sample_size, replace=False)) if sample_size < n else None
        sample = features if rows is None else features[xp.asarray(rows)]
        sample_norms = squared_norms if rows is None else squared_norms[xp.asarray(rows)]
        seeds = xp_kmeans.kmeans_plusplus(xp, sample, sample_norms, n_clusters, rng, n_trials=KMEANS_PLUSPLUS_TRIALS)
        _, centres, _, _ = fit(xp, sample, sample_norms, seeds, max_iter, tol_abs)
        inertia = xp_kmeans.full_inertia(xp, features, squared_norms, centres)
        if inertia < best_inertia:
            best, best_inertia = centres, inertia
    return best


def _engine(name: str):
    if name == "cuml":
        return _cuml_fit
    if name == "xp":
        return _xp_fit
    raise ValueError(f"engine must be 'cuml' or 'xp', got {name!r}")


def _xp_fit(xp, x, squared_norms, centres, max_iter, tol_abs):
    fit = xp_kmeans.lloyd(xp, x, centres, max_iter=max_iter, tol_abs=tol_abs, squared_norms=squared_norms)
    return fit.labels, fit.centers, fit.inertia, fit.n_iter


def _cuml_fit(xp, x, squared_norms, centres, max_iter, tol_abs):
    """One cuML Lloyd run from ``centres``. cuML works on its own stream: the current stream
    is synchronized first (it made ``x``), and the device after (cuML's results are ready)."""
    from cuml.cluster import KMeans

    xp.cuda.get_current_stream().synchronize()
    model = KMeans(
        n_clusters=int(centres.shape[0]), init=centres, n_init=1, max_iter=max_iter,
        tol=cuml_tolerance(tol_abs), output_type="cupy",
    )
    model.fit(x)
    xp.cuda.Device().synchronize()
    return model.labels_, model.cluster_centers_, float(model.inertia_), int(model.n_iter_)


def _host(array) -> np.ndarray:
    return array.get() if hasattr(array, "get") else np.asarray(array)
