"""Full-dimensional KMeans of ``gpu4d.cluster``'s exact mode, on the CPU and the GPU.

One code path over an array module ``xp`` (numpy on the CPU and under the simulator, CuPy on a
GPU) with two Lloyd engines: ``"xp"``, the core's :func:`gpu4d.kmeans.core.lloyd` (with the
backend's assign-and-sum kernel when one is given), and ``"cuml"``, cuML's Lloyd on a GPU where
cuML is installed (the design's choice while the matrix fits in device memory).

``n_init``: ``n_init`` full fits would cost ``n_init`` times one. Here each of the ``n_init``
trials seeds (float32 k-means++, ``KMEANS_PLUSPLUS_TRIALS`` candidates) and fits a random row
subsample; the trial whose centres have the lowest inertia over *all* rows starts one Lloyd run
over all rows. Trials cost one pass over the matrix each, so a small region (a defect of a few
percent of the scan) is rarely lost to a local optimum that merges it into a grain.

``tol``: scikit-learn's, relative to the mean per-feature variance, computed without a copy of
the matrix (``core.mean_feature_variance``): Lloyd stops when the sum of squared centre shifts
is at most ``tol`` x that variance, or when no label changes. cuVS (cuML's engine) reads ``tol``
as an absolute bound on the same sum, so it gets the scaled value; it also stops when an
iteration lowers the inertia by less than that fraction of it, a second test that fires later
than the shift test on preprocessed patterns (their variance is well below 1). cuVS refuses
``tol <= 0``: ``tol=0`` (run until no label changes, as live's refinement asks) becomes
``CUML_MIN_TOL``, which only an iteration that moves no centre meets.

``max_iter``: the final fit's iterations; each trial has the same bound.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..arrays import to_host
from ..errors import Gpu4dWarning
from . import core

#: k-means++ candidates per seed. scikit-learn's default (2 + ln k) often puts two seeds in one
#: large grain and none in a small defect region; 10 candidates made that rare on the synthetic
#: scans. With float32 seeding the extra candidates cost little.
KMEANS_PLUSPLUS_TRIALS = 10
#: Rows each trial fit runs on (at least ``INIT_SAMPLE_PER_CLUSTER`` per cluster).
INIT_SAMPLE = 4096
INIT_SAMPLE_PER_CLUSTER = 256
#: The smallest tolerance handed to cuVS, which requires ``tol > 0``.
CUML_MIN_TOL = 1e-30
ENGINES = ("xp", "cuml")


def full_kmeans(
    xp, features, n_clusters: int, *, n_init: int, max_iter: int, tol: float, random_state,
    init=None, engine: str = "xp", assign_and_sum=None,
) -> core.KMeansFit:
    """KMeans of all rows of ``features`` (n, m) float32 on ``xp``'s device, started from the
    best of ``n_init`` subsample trials, or from ``init`` (k, m) (one fit, no trials).

    ``engine``: ``"xp"`` or ``"cuml"`` (see the module). ``assign_and_sum``: the assignment
    kernel for the ``"xp"`` engine (``backend.assign_and_sum``); None runs it in ``xp``.
    ``features`` is centred in place during the fit and restored (to float32 rounding): no
    second matrix of its size is made.

    Returns
    -------
    KMeansFit
        labels (n,) int32 and centers (k, m) float32 as host numpy arrays.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    fit = _cuml_fit if engine == "cuml" else _xp_fit
    features = xp.ascontiguousarray(features, dtype=np.float32)
    # centred in place for the fit and restored after (scikit-learn's copy_x=False): distances
    # ||x||^2 - 2 x.c + ||c||^2 of patterns that share a large common part cancel in float32
    # until their labels are rounding noise (a DE movie's frames: Lloyd never converged)
    mean = features.mean(axis=0, dtype=np.float64).astype(np.float32)
    features -= mean
    try:
        squared_norms = core.row_squared_norms(xp, features)
        tol_abs = float(tol) * core.mean_feature_variance(xp, features, squared_norms) if tol > 0 else 0.0
        if init is None:
            rng = np.random.default_rng(random_state)
            init = _best_trial_centres(
                xp, features, squared_norms, n_clusters, n_init, max_iter, tol_abs, rng, fit, assign_and_sum
            )
        else:
            init = xp.asarray(init, dtype=np.float32) - mean
        result = fit(xp, features, squared_norms, xp.asarray(init, dtype=np.float32), max_iter, tol_abs, assign_and_sum)
    finally:
        features += mean
    labels = to_host(result.labels).astype(np.int32)
    distinct = int(np.unique(labels).size)
    if distinct < n_clusters:
        warnings.warn(
            f"KMeans found only {distinct} distinct patterns for the {n_clusters} clusters asked for "
            "(many patterns are identical after masking and normalizing); some clusters are empty",
            Gpu4dWarning, stacklevel=3,
        )
    return core.KMeansFit(
        labels=labels,
        centers=to_host(result.centers + mean).astype(np.float32),
        inertia=float(result.inertia),
        n_iter=int(result.n_iter),
    )


def cuml_tolerance(tol_abs: float) -> float:
    """cuVS's ``tol`` for scikit-learn's absolute tolerance ``tol_abs`` (see the module)."""
    return max(float(tol_abs), CUML_MIN_TOL)


def _best_trial_centres(xp, features, squared_norms, n_clusters, n_trials, max_iter, tol_abs, rng, fit,
                        assign_and_sum):
    """The centres, among ``n_trials`` subsample fits, of lowest inertia over all rows.

    Each trial fits a random quarter of the rows (at most ``INIT_SAMPLE``, at least
    ``INIT_SAMPLE_PER_CLUSTER`` per cluster), with the tolerance scale of all rows.
    """
    n = features.shape[0]
    sample_size = min(n, max(INIT_SAMPLE_PER_CLUSTER * n_clusters, min(INIT_SAMPLE, n // 4)))
    best, best_inertia = None, np.inf
    for _ in range(n_trials):
        rows = np.sort(rng.choice(n, sample_size, replace=False)) if sample_size < n else None
        sample = features if rows is None else features[xp.asarray(rows)]
        sample_norms = squared_norms if rows is None else squared_norms[xp.asarray(rows)]
        seeds = core.kmeans_plusplus(xp, sample, sample_norms, n_clusters, rng, n_trials=KMEANS_PLUSPLUS_TRIALS)
        centres = fit(xp, sample, sample_norms, seeds, max_iter, tol_abs, assign_and_sum).centers
        inertia = core.full_inertia(xp, features, squared_norms, centres)
        if inertia < best_inertia:
            best, best_inertia = centres, inertia
    return best


def _xp_fit(xp, x, squared_norms, centres, max_iter, tol_abs, assign_and_sum):
    return core.lloyd(xp, x, centres, max_iter=max_iter, tol_abs=tol_abs, squared_norms=squared_norms,
                      assign_and_sum=assign_and_sum)


def _cuml_fit(xp, x, squared_norms, centres, max_iter, tol_abs, assign_and_sum):
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
    return core.KMeansFit(model.labels_, model.cluster_centers_, float(model.inertia_), int(model.n_iter_))
