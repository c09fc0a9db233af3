"""KMeans (k-means++ and Lloyd) written once against an array module ``xp`` (numpy or cupy).

Used by ``gpu4d.sweep`` on the reduced (n, c) coordinates, which are small (c ~ 10-100), on the
device where the sketch already lives. The full-dimensional fits of ``gpu4d.cluster`` keep
using scikit-learn / cuML (``backend.kmeans``).

It follows scikit-learn's ``KMeans(init="k-means++", algorithm="lloyd")``: greedy k-means++
with ``2 + log(k)`` local trials, ``tol`` relative to the mean per-feature variance, strict
convergence when no label changes, empty clusters moved to the points farthest from their
centre, and the run of lowest inertia kept. A sweep may add a warm start: the centres of a
smaller k completed by the same greedy k-means++ steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class XpKMeansFit:
    """A KMeans fit on the device: labels (n,) int32 and centers (k, c) float32 stay there."""

    labels: object
    centers: object
    inertia: float
    n_iter: int


def kmeans(
    xp,
    z,
    n_clusters: int,
    *,
    n_init: int,
    max_iter: int,
    tol: float,
    rng: np.random.Generator,
    warm_start=None,
    assign_and_sum=None,
) -> XpKMeansFit:
    """Best of ``n_init`` k-means++ + Lloyd runs on the rows of ``z`` (n, c) float32.

    Parameters
    ----------
    xp : numpy or cupy
    z : (n, c) float32 array of ``xp``
    n_clusters : k, 1 <= k <= n
    n_init, max_iter, tol : scikit-learn's meaning (``tol`` relative to the mean variance).
    rng : host random generator; only a few numbers per centre are drawn from it.
    warm_start : optional (j, c) centres, j <= k (e.g. a smaller k's): one more run starts from
        them, completed to k centres by greedy k-means++ steps.
    assign_and_sum : optional ``f(dots (n, k), centre_norms (k,), z) -> (labels, sums, counts)``,
        a kernel for the assignment half of each Lloyd iteration (``backend.assign_and_sum``);
        by default the same in ``xp`` (argmin and a one-hot product).

    Returns
    -------
    XpKMeansFit
        ``inertia`` is the sum of squared distances in ``z``'s space (float64).
    """
    z = xp.ascontiguousarray(z, dtype=np.float32)
    squared_norms = xp.einsum("ij,ij->i", z, z)
    tol_abs = float(tol) * float(xp.mean(xp.var(z, axis=0, dtype=np.float64)))
    starts = [None] * n_init
    if warm_start is not None:
        starts.append(xp.asarray(warm_start, dtype=np.float32)[:n_clusters])
    best = None
    for initial in starts:
        centers = kmeans_plusplus(xp, z, squared_norms, n_clusters, rng, initial=initial)
        fit = _lloyd(xp, z, squared_norms, centers, max_iter, tol_abs, assign_and_sum)
        if best is None or fit.inertia < best.inertia:
            best = fit
    return best


#: Rows per chunk when reducing over a full feature matrix (full-dimensional fits).
CHUNK_ROWS = 4096


def row_squared_norms(xp, features):
    """(n,) float32 squared norms of the rows, chunk by chunk (no temporary of X's size)."""
    norms = xp.empty(features.shape[0], np.float32)
    for start in range(0, features.shape[0], CHUNK_ROWS):
        chunk = features[start : start + CHUNK_ROWS]
        norms[start : start + chunk.shape[0]] = xp.einsum("ij,ij->i", chunk, chunk)
    return norms


def mean_feature_variance(xp, features, squared_norms) -> float:
    """``var(features, axis=0).mean()`` in float64, without a copy of ``features`` (the scale of
    ``tol``): mean_j var_j = sum_ij x_ij^2 / (n m) - mean_j mu_j^2."""
    n, m = features.shape
    column_sum = xp.zeros(m, np.float64)
    for start in range(0, n, CHUNK_ROWS):
        column_sum += features[start : start + CHUNK_ROWS].sum(axis=0, dtype=np.float64)
    mu = column_sum / n
    return max(0.0, float(squared_norms.sum(dtype=np.float64)) / (n * m) - float(mu @ mu) / m)


def full_inertia(xp, features, squared_norms, centres) -> float:
    """Sum over all rows of the squared distance to the nearest centre (float64 total)."""
    total = 0.0
    for start in range(0, features.shape[0], CHUNK_ROWS):
        chunk = slice(start, start + CHUNK_ROWS)
        distances = squared_distances(xp, features[chunk], squared_norms[chunk], centres)
        total += float(distances.min(axis=1).sum(dtype=np.float64))
    return total


def squared_distances(xp, z, squared_norms, centers):
    """(n, k) squared Euclidean distances, clipped at 0 (the expansion can go slightly below)."""
    d = z @ centers.T
    d *= -2.0
    d += squared_norms[:, None]
    d += xp.einsum("ij,ij->i", centers, centers)[None, :]
    return xp.maximum(d, 0.0, out=d)


def kmeans_plusplus(
    xp, z, squared_norms, n_clusters: int, rng: np.random.Generator, initial=None, n_trials=None
):
    """Greedy k-means++ seeding (scikit-learn's): (k, c) float32 centres chosen among the rows.

    ``initial`` (j, c): centres to keep; the other k - j are added by the same greedy steps.
    ``n_trials``: candidates per centre, by default scikit-learn's ``2 + log(k)``. The distances
    are float32 matrix products (scikit-learn's own seeding upcasts float32 data to float64
    chunk by chunk, which made it 10x slower than the Lloyd iterations on wide feature rows).
    """
    n = z.shape[0]
    if n_trials is None:
        n_trials = 2 + int(math.log(n_clusters))
    centers = xp.empty((n_clusters, z.shape[1]), np.float32)
    if initial is None or initial.shape[0] == 0:
        first = int(rng.integers(n))
        centers[0] = z[first]
        closest = squared_distances(xp, z, squared_norms, z[first : first + 1])[:, 0]
        done = 1
    else:
        done = int(initial.shape[0])
        centers[:done] = initial
        closest = squared_distances(xp, z, squared_norms, centers[:done]).min(axis=1)
    potential = float(closest.sum(dtype=np.float64))
    for c in range(done, n_clusters):
        if potential <= 0.0:  # fewer distinct points than clusters: any row will do
            ids = xp.asarray(rng.integers(n, size=n_trials))
        else:
            cumulative = xp.cumsum(closest, dtype=np.float64)
            targets = xp.asarray(rng.random(n_trials) * potential)
            ids = xp.minimum(xp.searchsorted(cumulative, targets), n - 1)
        candidate_d = squared_distances(xp, z, squared_norms, z[ids])  # (n, trials)
        xp.minimum(candidate_d, closest[:, None], out=candidate_d)
        potentials = candidate_d.sum(axis=0, dtype=np.float64)
        best = int(xp.argmin(potentials))
        closest = candidate_d[:, best].copy()
        potential = float(potentials[best])
        centers[c] = z[int(ids[best])]
    return centers


def nearest(xp, z, centers, chunk: int = 65536):
    """(n,) int32 index of the nearest of ``centers`` (k, c) for every row of ``z`` (n, c)."""
    centers = xp.asarray(centers, dtype=np.float32)
    norms = xp.einsum("ij,ij->i", centers, centers)
    labels = xp.empty(z.shape[0], np.int32)
    for start in range(0, z.shape[0], chunk):
        dots = z[start : start + chunk] @ centers.T
        labels[start : start + chunk] = xp.argmin(norms[None, :] - 2.0 * dots, axis=1)
    return labels


def _assign_and_sum(xp, z, centers, assign_and_sum=None):
    """Labels of the nearest centres, and the clusters' sums (k, c) and sizes (k,).

    The nearest centre minimises ``||c||^2 - 2 z.c`` (``||z||^2`` does not matter).
    """
    dots = z @ centers.T
    norms = xp.einsum("ij,ij->i", centers, centers)
    if assign_and_sum is not None:
        return assign_and_sum(dots, norms, z)
    k = centers.shape[0]
    labels = xp.argmin(norms[None, :] - 2.0 * dots, axis=1).astype(np.int32)
    one_hot = (labels[:, None] == xp.arange(k, dtype=np.int32)[None, :]).astype(np.float32)
    return labels, one_hot.T @ z, xp.bincount(labels, minlength=k)


def lloyd(xp, z, centers, *, max_iter: int, tol_abs: float, squared_norms=None) -> XpKMeansFit:
    """Lloyd iterations on the rows of ``z`` (n, c) float32 from ``centers`` (k, c), as
    scikit-learn's: stop when no label changes or the centres move by at most ``tol_abs`` (sum of
    squared shifts; scikit-learn's ``tol`` times the mean feature variance). The GPU backend's
    full-dimensional KMeans without cuML (``gpu4d.device_kmeans``)."""
    if squared_norms is None:
        squared_norms = xp.einsum("ij,ij->i", z, z)
    centers = xp.asarray(centers, dtype=np.float32)
    return _lloyd(xp, z, squared_norms, centers, max_iter, tol_abs)


def _lloyd(xp, z, squared_norms, centers, max_iter: int, tol_abs: float, assign_and_sum=None) -> XpKMeansFit:
    labels = None
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        new_labels, sums, counts = _assign_and_sum(xp, z, centers, assign_and_sum)
        new_centers = _update_centers(xp, z, squared_norms, new_labels, sums, counts, centers)
        shift = float(((new_centers - centers) ** 2).sum(dtype=np.float64))
        centers = new_centers
        if labels is not None and bool(xp.all(labels == new_labels)):
            labels = new_labels
            break  # strict convergence: the centres are the means of unchanged clusters
        labels = new_labels
        if shift <= tol_abs:
            break
    # a last assignment, so that labels and centres agree (as scikit-learn does)
    distances = squared_distances(xp, z, squared_norms, centers)
    labels = xp.argmin(distances, axis=1).astype(np.int32)
    inertia = float(xp.take_along_axis(distances, labels[:, None].astype(np.int64), axis=1).sum(dtype=np.float64))
    return XpKMeansFit(labels=labels, centers=centers, inertia=inertia, n_iter=n_iter)


def _update_centers(xp, z, squared_norms, labels, sums, counts, old_centers):
    """Means of the clusters; an empty cluster takes the point farthest from its centre."""
    sums = sums.astype(np.float64)
    counts = counts.astype(np.float64)
    empty = xp.nonzero(counts == 0)[0]
    if empty.size:
        distances = squared_distances(xp, z, squared_norms, old_centers)
        own = xp.take_along_axis(distances, labels[:, None].astype(np.int64), axis=1)[:, 0]
        far = xp.argsort(-own)[: int(empty.size)]
        for cluster, point in zip(empty.tolist(), far.tolist()):
            old = int(labels[point])
            sums[old] -= z[point]
            counts[old] -= 1
            sums[cluster] = z[point]
            counts[cluster] = 1
    return (sums / xp.maximum(counts, 1)[:, None]).astype(np.float32)
