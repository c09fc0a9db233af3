"""KMeans steps written once against an array module ``xp`` (numpy or cupy).

Every KMeans in gpu4d is built from these: greedy k-means++ seeding, Lloyd iterations with
scikit-learn's stopping rules and empty-cluster rule, the nearest-centre assignment and the
per-cluster sums, all optionally weighted.

* :func:`kmeans` (best of ``n_init`` seeded runs, plus an optional warm start) fits the sweep's
  and the regions' reduced coordinates and live's weighted sample.
* :mod:`gpu4d.kmeans.full` fits ``gpu4d.cluster``'s full feature matrix (exact mode) with
  :func:`kmeans_plusplus` and :func:`lloyd`.
* :mod:`gpu4d.kmeans.minibatch` folds live batches in with :func:`assign` and
  :func:`cluster_sums`.

It follows scikit-learn's ``KMeans(init="k-means++", algorithm="lloyd")``: greedy k-means++
with ``2 + log(k)`` local trials (probability ~ weight x D^2), ``tol`` relative to the mean
per-feature variance, strict convergence when no label changes, empty clusters moved to the
points farthest from their centre, a last assignment (unless no label changed) so that labels
and centres agree. The inertia is summed from the differences in float64 (:func:`inertia`).

The assignment half of a Lloyd iteration may run in a kernel: ``assign_and_sum`` is
``backend.assign_and_sum`` (``kernels.lloyd`` on the CPU, ``kernels.lloyd_cuda`` on the GPU);
without it, or with weights (the kernels take none), it runs in ``xp`` (:func:`assign`,
:func:`cluster_sums`). Callers pass the kernel for the sweep's and regions' coordinates and the
CPU's full-dimensional fit; the GPU's full-dimensional fit keeps CuPy's matrix products
(``backend.GpuBackend.kmeans`` says why).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Rows per chunk when reducing over a large matrix (no temporary of its size).
CHUNK_ROWS = 4096
#: Rows per chunk of an assignment (an (n, k) score matrix per chunk).
ASSIGN_CHUNK_ROWS = 65536


@dataclass(frozen=True)
class KMeansFit:
    """A KMeans fit: labels (n,) int32 and centers (k, c) in the array module they were fitted
    in (``gpu4d.kmeans.full`` returns host numpy arrays)."""

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
    weights=None,
    assign_and_sum=None,
    dtype=np.float32,
) -> KMeansFit:
    """Best of ``n_init`` k-means++ + Lloyd runs on the rows of ``z`` (n, c).

    Parameters
    ----------
    xp : numpy or cupy
    z : (n, c) array of ``xp``, computed in ``dtype`` (float32, or float64 for small samples)
    n_clusters : k, 1 <= k <= n
    n_init, max_iter, tol : scikit-learn's meaning (``tol`` relative to the mean variance).
    rng : host random generator; only a few numbers per centre are drawn from it.
    warm_start : optional (j, c) centres, j <= k (e.g. a smaller k's, or the previous fit's):
        one more run starts from them, completed to k centres by greedy k-means++ steps.
    weights : optional (n,) positive sample weights of ``xp`` (scikit-learn's
        ``sample_weight``): seeding, means and inertia are weighted.
    assign_and_sum : optional ``f(dots (n, k), centre_norms (k,), z) -> (labels, sums,
        counts)``, the assignment kernel (``backend.assign_and_sum``); unweighted runs only.

    Returns
    -------
    KMeansFit
        ``inertia`` is the (weighted) sum of squared distances in ``z``'s space (float64).
    """
    z = xp.ascontiguousarray(z, dtype=dtype)
    if weights is not None:
        weights = xp.asarray(weights, dtype=dtype)
    squared_norms = xp.einsum("ij,ij->i", z, z)
    tol_abs = float(tol) * float(xp.mean(xp.var(z, axis=0, dtype=np.float64))) if tol > 0 else 0.0
    starts = [None] * n_init
    if warm_start is not None:
        starts.append(xp.asarray(warm_start, dtype=dtype)[:n_clusters])
    best = None
    for initial in starts:
        centers = kmeans_plusplus(xp, z, squared_norms, n_clusters, rng, initial=initial, weights=weights)
        fit = lloyd(xp, z, centers, max_iter=max_iter, tol_abs=tol_abs, squared_norms=squared_norms,
                    weights=weights, assign_and_sum=assign_and_sum)
        if best is None or fit.inertia < best.inertia:
            best = fit
    return best


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
        _, distances = assign(xp, features[chunk], centres, squared_norms=squared_norms[chunk])
        total += float(distances.sum(dtype=np.float64))
    return total


def squared_distances(xp, z, squared_norms, centers):
    """(n, k) squared Euclidean distances, clipped at 0 (the expansion can go slightly below)."""
    d = z @ centers.T
    d *= -2.0
    d += squared_norms[:, None]
    d += xp.einsum("ij,ij->i", centers, centers)[None, :]
    return xp.maximum(d, 0.0, out=d)


def assign(xp, z, centers, *, squared_norms=None, center_norms=None):
    """Nearest centre of each row of ``z`` (n, c) among ``centers`` (k, c).

    The nearest centre minimises ``||c||^2 - 2 z.c`` (one matrix product; ``||z||^2`` does not
    change the choice; ties go to the first centre, as in the kernels).

    Returns
    -------
    labels : (n,) int32 array of ``xp``
    distances : (n,) squared distances to those centres, clipped at 0
    """
    centers = xp.asarray(centers, dtype=z.dtype)
    if center_norms is None:
        center_norms = xp.einsum("ij,ij->i", centers, centers)
    if squared_norms is None:
        squared_norms = xp.einsum("ij,ij->i", z, z)
    n = z.shape[0]
    labels = xp.empty(n, np.int32)
    distances = xp.empty(n, z.dtype)
    for start in range(0, max(n, 1), ASSIGN_CHUNK_ROWS):
        rows = slice(start, start + ASSIGN_CHUNK_ROWS)
        scores = center_norms[None, :] - 2.0 * (z[rows] @ centers.T)  # (rows, k)
        best = xp.argmin(scores, axis=1)
        labels[rows] = best
        nearest_score = xp.take_along_axis(scores, best[:, None].astype(np.int64), axis=1)[:, 0]
        distances[rows] = xp.maximum(nearest_score + squared_norms[rows], 0.0)
    return labels, distances


def nearest(xp, z, centers):
    """(n,) int32 index of the nearest of ``centers`` (k, c) for every row of ``z`` (n, c)."""
    return assign(xp, z, centers)[0]


def cluster_sums(xp, z, labels, n_clusters: int, weights=None):
    """Per-cluster sums (k, c) in ``z``'s dtype and sizes (k,) float64 of the rows of ``z``
    with their ``labels``; ``weights`` (n,) (e.g. 0/1 to leave rows out) weight both. One
    (k, n) x (n, c) one-hot matrix product."""
    one_hot = (labels[:, None] == xp.arange(n_clusters, dtype=np.int32)[None, :]).astype(z.dtype)
    if weights is not None:
        one_hot *= weights[:, None].astype(z.dtype)
    return one_hot.T @ z, one_hot.sum(axis=0, dtype=np.float64)


def kmeans_plusplus(
    xp, z, squared_norms, n_clusters: int, rng: np.random.Generator, initial=None, n_trials=None,
    weights=None,
):
    """Greedy k-means++ seeding (scikit-learn's): (k, c) centres chosen among the rows.

    ``initial`` (j, c): centres to keep; the other k - j are added by the same greedy steps.
    ``n_trials``: candidates per centre, by default scikit-learn's ``2 + log(k)``.
    ``weights`` (n,): a row is drawn with probability ~ weight x D^2 (the first ~ weight), and
    candidates are compared by their weighted potential, as scikit-learn's ``sample_weight``.
    The distances are matrix products in ``z``'s dtype (scikit-learn's own seeding upcasts
    float32 data to float64 chunk by chunk, 10x slower than a Lloyd iteration on wide rows).
    """
    n = z.shape[0]
    if n_trials is None:
        n_trials = 2 + int(math.log(n_clusters))
    centers = xp.empty((n_clusters, z.shape[1]), z.dtype)
    if initial is None or initial.shape[0] == 0:
        if weights is None:
            first = int(rng.integers(n))
        else:
            first = int(_draw(xp, weights, rng.random(1), float(weights.sum(dtype=np.float64)))[0])
        centers[0] = z[first]
        closest = squared_distances(xp, z, squared_norms, z[first : first + 1])[:, 0]
        done = 1
    else:
        done = int(initial.shape[0])
        centers[:done] = initial
        closest = squared_distances(xp, z, squared_norms, centers[:done]).min(axis=1)
    mass = closest if weights is None else closest * weights
    potential = float(mass.sum(dtype=np.float64))
    for c in range(done, n_clusters):
        if potential <= 0.0:  # fewer distinct points than clusters: any row will do
            ids = xp.asarray(rng.integers(n, size=n_trials))
        else:
            ids = _draw(xp, mass, rng.random(n_trials), potential)
        candidate_d = squared_distances(xp, z, squared_norms, z[ids])  # (n, trials)
        xp.minimum(candidate_d, closest[:, None], out=candidate_d)
        candidate_mass = candidate_d if weights is None else candidate_d * weights[:, None]
        potentials = candidate_mass.sum(axis=0, dtype=np.float64)
        best = int(xp.argmin(potentials))
        closest = candidate_d[:, best].copy()
        mass = candidate_mass[:, best].copy()
        potential = float(potentials[best])
        centers[c] = z[int(ids[best])]
    return centers


def _draw(xp, mass, uniforms, total: float):
    """Rows drawn with probability ~ ``mass`` (n,) (``total`` its sum) for host uniforms in
    [0, 1): scikit-learn's ``searchsorted(cumsum(mass), uniforms * total)``."""
    cumulative = xp.cumsum(mass, dtype=np.float64)
    targets = xp.asarray(np.asarray(uniforms) * total)
    return xp.minimum(xp.searchsorted(cumulative, targets), mass.shape[0] - 1)


def lloyd(
    xp, z, centers, *, max_iter: int, tol_abs: float, squared_norms=None, weights=None,
    assign_and_sum=None,
) -> KMeansFit:
    """Lloyd iterations on the rows of ``z`` (n, c) from ``centers`` (k, c), as scikit-learn's.

    Stops when no label changes (strict convergence) or when the centres move by at most
    ``tol_abs`` (sum of squared shifts: scikit-learn's ``tol`` times the mean feature
    variance), after at most ``max_iter`` iterations; then assigns once more, so that labels
    and centres agree. ``weights`` and ``assign_and_sum``: see :func:`kmeans`.
    """
    if squared_norms is None:
        squared_norms = xp.einsum("ij,ij->i", z, z)
    centers = xp.asarray(centers, dtype=z.dtype)
    labels = None
    n_iter = 0
    strict = False
    for n_iter in range(1, max_iter + 1):
        new_labels, sums, counts = _assign_and_sum(xp, z, centers, weights, assign_and_sum)
        new_centers = _update_centers(xp, z, squared_norms, new_labels, sums, counts, centers, weights)
        shift = float(((new_centers - centers) ** 2).sum(dtype=np.float64))
        centers = new_centers
        strict = labels is not None and bool(xp.all(labels == new_labels))
        labels = new_labels
        if strict or shift <= tol_abs:
            break  # strict convergence: the centres are the means of the unchanged clusters
    if not strict:  # else the labels are already those of the centres (as in scikit-learn)
        labels, _ = assign(xp, z, centers, squared_norms=squared_norms)
    return KMeansFit(labels=labels, centers=centers, inertia=inertia(xp, z, labels, centers, weights), n_iter=n_iter)


#: Bytes of the (rows, c) difference temporary of :func:`inertia`.
INERTIA_CHUNK_BYTES = 16 * 2**20


def inertia(xp, z, labels, centers, weights=None) -> float:
    """(Weighted) sum of squared distances of the rows of ``z`` (n, c) to their ``labels``'
    centres, from the differences themselves: the expansion ``||z||^2 - 2 z.c + ||c||^2``
    that chooses the labels loses digits to cancellation in float32 (1e-4 of the inertia on a
    seed-sized scan's patterns). Chunks of ``INERTIA_CHUNK_BYTES``, float64 sums."""
    rows = max(1, INERTIA_CHUNK_BYTES // (z.dtype.itemsize * max(1, z.shape[1])))
    total = xp.zeros((), np.float64)
    for start in range(0, z.shape[0], rows):
        chunk = slice(start, start + rows)
        difference = z[chunk] - centers[labels[chunk]]
        # rows summed in float64: a float32 sum over a pattern's 20k pixels drifts by ~1e-5
        distances = xp.square(difference, out=difference).sum(axis=1, dtype=np.float64)
        if weights is not None:
            distances = distances * weights[chunk]
        total += distances.sum(dtype=np.float64)
    return float(total)


def _assign_and_sum(xp, z, centers, weights, kernel):
    """Labels of the nearest centres, and the clusters' (weighted) sums (k, c) and sizes (k,):
    the kernel when given (it takes no weights), else :func:`assign` and :func:`cluster_sums`."""
    if kernel is not None and weights is None:
        dots = z @ centers.T
        return kernel(dots, xp.einsum("ij,ij->i", centers, centers), z)
    labels, _ = assign(xp, z, centers)
    sums, counts = cluster_sums(xp, z, labels, centers.shape[0], weights)
    return labels, sums, counts


def _update_centers(xp, z, squared_norms, labels, sums, counts, old_centers, weights):
    """Means of the clusters. Empty-cluster rule (scikit-learn's): each empty cluster takes one
    of the points farthest from their own (old) centre, which leaves its cluster."""
    sums = sums.astype(np.float64)
    counts = counts.astype(np.float64)
    empty = xp.nonzero(counts == 0)[0]
    if empty.size:
        distances = squared_distances(xp, z, squared_norms, old_centers)
        own = xp.take_along_axis(distances, labels[:, None].astype(np.int64), axis=1)[:, 0]
        far = xp.argsort(-own)[: int(empty.size)]
        for cluster, point in zip(empty.tolist(), far.tolist()):
            old = int(labels[point])
            weight = 1.0 if weights is None else float(weights[point])
            moved = z[point].astype(np.float64) * weight
            sums[old] -= moved
            counts[old] -= weight
            sums[cluster] = moved
            counts[cluster] = weight
    # a cluster emptied by the rule keeps a zero centre, as in scikit-learn
    return (sums / xp.where(counts > 0, counts, 1.0)[:, None]).astype(z.dtype)
