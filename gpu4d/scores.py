"""Scores of the clusterings of a k-sweep, and the rule that suggests k.

Inertia is exact, in the full preprocessed space (from the sweep's last streaming pass). The
silhouette, Calinski-Harabasz and Davies-Bouldin scores (scikit-learn's definitions, written
here in numpy: importing ``sklearn.metrics`` alone takes about a second) are computed in the
reduced space the sweep clusters in (the first principal components), the silhouette on a fixed
random subsample of the patterns, the same for every k.
"""

from __future__ import annotations

import math

import numpy as np

SCORE_NAMES = ("inertia", "silhouette", "calinski_harabasz", "davies_bouldin", "separation")
DEFAULT_SILHOUETTE_SAMPLES = 3000
#: Clusters this far apart count as distinct regions (see ``min_separation``, measured in the
#: edge-preserving smoothed coordinates the regions are found in). The three thresholds were
#: chosen together (separation 6 .. 10, stability 0.95 .. 0.99, smallest share 0 .. 1.5%) on the
#: tune half of ``benchmarks/bench_quality.py`` (three sweep seeds) and the test suite's
#: synthetic families (README, "Map quality"): one region split along its noise or a gradient
#: gives halves 2.5-5.5 apart, most of the benchmark's regions 7 and more.
SEPARATION_THRESHOLD = 7.0
#: ... and this stable: the mean adjusted Rand index between the clustering and refits on random
#: halves of the patterns (``gpu4d.regions.stability``). A split along a region's noise comes
#: out differently in each refit; the scan's regions do not.
STABILITY_THRESHOLD = 0.98
#: ... and every cluster holds at least this share of the patterns. Smaller clusters are kept in
#: the maps of the k that make them, but do not make a k the suggestion: on the benchmark they
#: were the corner of a scan where the descan is largest (8-10 patterns of 1,024), never a region
#: (its smallest regions hold 2% of the patterns).
MIN_SUGGESTED_SHARE = 0.015

RULE = (
    "the largest k whose clusters are all distinct and stable: stable when refits on random "
    f"halves of the patterns find the same clusters (stability, mean ARI >= {STABILITY_THRESHOLD}); "
    "distinct when for every pair of clusters the distance "
    "between their centroids under the pooled covariance of their members (Mahalanobis) is "
    f">= {SEPARATION_THRESHOLD} (the 'separation' score, computed in the reduced space smoothed "
    "over the scan; one region split along its noise or a gradient gives halves 2.5-5.5 "
    f"apart); every cluster holds >= {MIN_SUGGESTED_SHARE:.1%} of the patterns (smaller ones stay "
    "in the maps but do not count); the smallest k of the sweep if no k passes. Reported beside it for reference: "
    "the inertia elbow (Kneedle, the k farthest below the chord of the exact inertia curve) "
    "and the k of best silhouette."
)


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labelings (scikit-learn's ``adjusted_rand_score``)."""
    a = np.unique(np.asarray(a).ravel(), return_inverse=True)[1].reshape(-1)
    b = np.unique(np.asarray(b).ravel(), return_inverse=True)[1].reshape(-1)
    n, shape = a.shape[0], (a.max() + 1, b.max() + 1)
    table = np.bincount(a * shape[1] + b, minlength=shape[0] * shape[1]).astype(np.float64).reshape(shape)
    pairs = lambda counts: float((counts * (counts - 1)).sum() / 2.0)  # noqa: E731
    together = pairs(table)
    rows = pairs(table.sum(axis=1))
    cols = pairs(table.sum(axis=0))
    total = n * (n - 1) / 2.0
    expected = rows * cols / total if total else 0.0
    best = (rows + cols) / 2.0
    if best == expected:  # both labelings trivial (one cluster, or every pattern alone)
        return 1.0
    return float((together - expected) / (best - expected))


def subsample(n: int, size: int, random_state: int | None) -> np.ndarray:
    """Sorted indices of a fixed random subsample of ``min(size, n)`` patterns."""
    if size >= n:
        return np.arange(n)
    rng = np.random.default_rng(random_state)
    return np.sort(rng.choice(n, size=size, replace=False))


def silhouettes(z: np.ndarray, sample: np.ndarray, labelings: np.ndarray, block: int = 512) -> list[float]:
    """Mean silhouette of the rows ``sample`` of ``z`` under each column of ``labelings``
    (n, K), as scikit-learn's (a member alone in its cluster scores 0); NaN where undefined
    (fewer than 2 clusters in the sample, or as many as its members).

    The Euclidean distances between the sampled rows (float64) are computed ``block`` rows at
    a time and summed per cluster of every labeling in one product: the (s, s) matrix is never
    held, and every labeling shares it.
    """
    rows = np.asarray(z[sample], np.float64)
    norms = np.einsum("ij,ij->i", rows, rows)
    s = rows.shape[0]
    codes, columns = [], []  # each labeling's 0..k-1 codes in the sample and its one-hot columns
    labelings = np.asarray(labelings)
    for labels in labelings.reshape(labelings.shape[0], -1).T:
        ids, code = np.unique(labels[sample], return_inverse=True)
        codes.append(code.reshape(-1))
        columns.append(ids.size)
    offsets = np.concatenate([[0], np.cumsum(columns)]).astype(np.int64)
    one_hot = np.zeros((s, int(offsets[-1])))
    for code, offset in zip(codes, offsets):
        one_hot[np.arange(s), offset + code] = 1.0
    sums = np.empty((s, one_hot.shape[1]))  # summed distance of each sampled row to each cluster
    for start in range(0, s, block):
        stop = min(s, start + block)
        squared = norms[start:stop, None] + norms[None, :] - 2.0 * (rows[start:stop] @ rows.T)
        np.maximum(squared, 0.0, out=squared)
        distances = np.sqrt(squared, out=squared)
        distances[np.arange(stop - start), np.arange(start, stop)] = 0.0
        sums[start:stop] = distances @ one_hot
    values = []
    for code, k, offset in zip(codes, columns, offsets):
        if 2 <= k <= s - 1:
            values.append(_mean_silhouette(sums[:, offset : offset + k], code))
        else:
            values.append(float("nan"))
    return values


def _mean_silhouette(sums: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette from each member's summed distance to each cluster (s, k)."""
    s, k = sums.shape
    sizes = np.bincount(labels, minlength=k).astype(np.float64)
    own_size = sizes[labels]
    within = sums[np.arange(s), labels] / np.maximum(own_size - 1, 1)
    mean_to = sums / sizes[None, :]
    mean_to[np.arange(s), labels] = np.inf
    nearest = mean_to.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = (nearest - within) / np.maximum(within, nearest)
    values[own_size == 1] = 0.0
    return float(np.nan_to_num(values).mean())


class _Clusters:
    """Sizes, centroids and spreads of one clustering of the rows of ``z``, in float64."""

    def __init__(self, z: np.ndarray, labels: np.ndarray):
        self.ids, labels = np.unique(labels, return_inverse=True)
        self.labels = labels.reshape(-1)
        k, dim = self.ids.size, z.shape[1]
        self.sizes = np.bincount(self.labels, minlength=k).astype(np.float64)
        one_hot = np.zeros((z.shape[0], k))
        one_hot[np.arange(z.shape[0]), self.labels] = 1.0
        z64 = np.asarray(z, np.float64)
        self.centroids = (one_hot.T @ z64) / self.sizes[:, None]
        residual = z64 - self.centroids[self.labels]
        # per cluster: the covariance of its members (ddof 0) and their distances to the centroid
        self.covariances = np.empty((k, dim, dim))
        for j in range(k):
            members = residual[self.labels == j]
            self.covariances[j] = members.T @ members / self.sizes[j]
        self.distance_sums = np.bincount(self.labels, np.sqrt(np.einsum("ij,ij->i", residual, residual)), k)
        self.within = float(np.einsum("ij,ij->", residual, residual))


def calinski_harabasz(z: np.ndarray, clusters: _Clusters) -> float:
    """Between- over within-cluster dispersion, each per degree of freedom (as scikit-learn)."""
    n, k = z.shape[0], clusters.ids.size
    mean = np.asarray(z, np.float64).mean(axis=0)
    offsets = clusters.centroids - mean
    between = float(clusters.sizes @ np.einsum("ij,ij->i", offsets, offsets))
    if clusters.within == 0.0:
        return 1.0
    return between * (n - k) / (clusters.within * (k - 1))


def davies_bouldin(clusters: _Clusters) -> float:
    """Mean over clusters of the worst (spread_i + spread_j) / centroid distance (as scikit-learn)."""
    spreads = clusters.distance_sums / clusters.sizes
    c = clusters.centroids
    gaps = np.sqrt(np.maximum(((c[:, None, :] - c[None, :, :]) ** 2).sum(axis=-1), 0.0))
    if np.allclose(spreads, 0) or np.allclose(gaps, 0):
        return 0.0
    gaps[gaps == 0] = np.inf
    ratios = (spreads[:, None] + spreads[None, :]) / gaps
    np.fill_diagonal(ratios, -np.inf)
    return float(ratios.max(axis=1).mean())


def mahalanobis(deltas: np.ndarray, covariances: np.ndarray) -> np.ndarray:
    """``sqrt(d^T C^-1 d)`` for each row d of ``deltas`` (r, c) and its ``covariances`` (r, c, c).

    A ridge of a millionth of the mean variance is added first: coordinates with no spread at
    all (tiny or synthetic scans) would make a covariance singular.
    """
    c = covariances.shape[-1]
    ridge = 1e-6 * np.trace(covariances, axis1=-2, axis2=-1) / c + 1e-30
    regular = covariances + ridge[:, None, None] * np.eye(c)
    solved = np.linalg.solve(regular, deltas[..., None])[..., 0]
    return np.sqrt(np.maximum(np.einsum("rc,rc->r", deltas, solved), 0.0))


def min_separation(z: np.ndarray, labels: np.ndarray, clusters: _Clusters | None = None) -> float:
    """The separation of the two least separated clusters.

    For clusters i and j: the Mahalanobis distance between their centroids under the pooled
    covariance of their members (the distance along the best linear discriminant, in standard
    deviations; ``gpu4d.regions`` merges by the same measure). Two halves of one region split
    along its noise or a smooth gradient are about 2.5 to 3.5 apart.
    """
    clusters = _Clusters(z, labels) if clusters is None else clusters
    c, cov, sizes = clusters.centroids, clusters.covariances, clusters.sizes
    worst = math.inf
    for a in range(c.shape[0]):
        for b in range(a + 1, c.shape[0]):
            delta = c[b] - c[a]
            if not np.any(delta):
                return 0.0
            pooled = (sizes[a] * cov[a] + sizes[b] * cov[b]) / (sizes[a] + sizes[b])
            worst = min(worst, float(mahalanobis(delta[None, :], pooled[None])[0]))
    return float(worst)


def reduced_space_scores(
    z: np.ndarray, labels: np.ndarray, sample: np.ndarray, silhouette: float | None = None
) -> dict[str, float]:
    """Silhouette (on ``sample``), Calinski-Harabasz, Davies-Bouldin and separation of one
    clustering.

    Parameters
    ----------
    z : (n, c) float32 host array, the reduced coordinates.
    labels : (n,) int labels.
    sample : indices of the silhouette's subsample.
    silhouette : the silhouette, if already computed (``silhouettes`` does every k at once).

    Returns
    -------
    dict with ``silhouette``, ``calinski_harabasz``, ``davies_bouldin`` and ``separation``;
    NaN where a score is undefined (fewer than 2 clusters, or as many clusters as patterns).
    """
    nan = float("nan")
    if silhouette is None:
        silhouette = silhouettes(z, sample, labels[:, None])[0]
    scores = {"silhouette": silhouette, "calinski_harabasz": nan, "davies_bouldin": nan, "separation": nan}
    n_labels = np.unique(labels).size
    if 2 <= n_labels <= z.shape[0] - 1:
        clusters = _Clusters(z, labels)
        scores["calinski_harabasz"] = calinski_harabasz(z, clusters)
        scores["davies_bouldin"] = davies_bouldin(clusters)
        scores["separation"] = min_separation(z, labels, clusters)
    return scores


def kneedle_elbow(ks, inertia) -> int | None:
    """Kneedle elbow: the k farthest below the chord between the curve's ends (axes scaled to
    [0, 1]); reported for reference, not used by ``RULE``. None with fewer than 3 finite points."""
    ks = np.asarray(ks, float)
    y = np.asarray(inertia, float)
    ok = np.isfinite(y)
    if ok.sum() < 3:
        return None
    ks, y = ks[ok], y[ok]
    x = (ks - ks[0]) / (ks[-1] - ks[0])
    span = y.max() - y.min()
    if span <= 0:
        return int(ks[0])
    y = (y - y.min()) / span
    below = (y[0] + (y[-1] - y[0]) * x) - y
    return int(ks[int(np.argmax(below))])


def inertia_drops(ks, inertia, total_variance: float) -> np.ndarray:
    """Per added cluster, the share of inertia each k cuts from the previous k of the sweep.

    ``1 - (I(k) / I(k'))^(1 / (k - k'))``; for the smallest k, k' = 1 and I(1) =
    ``total_variance``. NaN where undefined.
    """
    ks = [int(k) for k in ks]
    inertia = np.asarray(inertia, float)
    drops = np.full(len(ks), np.nan)
    previous_k, previous = 1, float(total_variance)
    for i, (k, value) in enumerate(zip(ks, inertia)):
        if k > previous_k and previous > 0 and np.isfinite(value) and value >= 0:
            drops[i] = 1.0 - (value / previous) ** (1.0 / (k - previous_k))
        previous_k, previous = k, value
    return drops


def suggest_k(
    ks, scores: dict[str, list], total_variance: float | None = None, smallest_share=None
) -> tuple[int, dict]:
    """Apply ``RULE`` to the scores of a sweep.

    Parameters
    ----------
    ks : the sweep's ks, increasing.
    scores : ``separation``, and for the reference values ``inertia`` and ``silhouette``; one
        value per k.
    total_variance : the inertia of one cluster (``sum ||x_i - mean||^2``), for the drops.
    smallest_share : per k, the share of the patterns in its smallest cluster (not checked when
        omitted).

    Returns
    -------
    (suggested_k, details): details holds ``separated_ks`` (the ks that pass), the reference
    ``kneedle_elbow_k``, ``silhouette_best_k`` and ``inertia_drops``, and ``reason``.
    """
    ks = [int(k) for k in ks]
    nan_list = [math.nan] * len(ks)
    separation = np.asarray(scores.get("separation", nan_list), float)
    silhouette = np.asarray(scores.get("silhouette", nan_list), float)
    stable = np.asarray(scores.get("stability", nan_list), float)  # NaN (exact mode): not asked
    share = np.asarray(nan_list if smallest_share is None else smallest_share, float)

    def unmet(j: int) -> list[str]:
        """What keeps ``ks[j]`` from being suggested (NaN stability or share: not asked)."""
        failed = []
        if not (np.isfinite(separation[j]) and separation[j] >= SEPARATION_THRESHOLD):
            failed.append(f"separation {separation[j]:.2f}")
        if stable[j] < STABILITY_THRESHOLD:
            failed.append(f"stability {stable[j]:.3f}")
        if share[j] < MIN_SUGGESTED_SHARE:
            failed.append(f"smallest cluster {share[j]:.1%}")
        return failed

    separated = [k for j, k in enumerate(ks) if not unmet(j)]
    share_rule = f" and >= {MIN_SUGGESTED_SHARE:.1%} of the patterns" if smallest_share is not None else ""
    details = {
        "separated_ks": separated,
        **({"smallest_share": [float(v) for v in share]} if smallest_share is not None else {}),
        "kneedle_elbow_k": kneedle_elbow(ks, scores.get("inertia", nan_list)),
        "silhouette_best_k": ks[int(np.nanargmax(silhouette))] if np.isfinite(silhouette).any() else None,
    }
    if total_variance is not None:
        drops = inertia_drops(ks, scores.get("inertia", nan_list), total_variance)
        details["inertia_drops"] = [float(d) for d in drops]
    if separated:
        k = max(separated)
        i = ks.index(k)
        if i + 1 < len(ks):  # ks increase, so the next k fails the rule
            after = f"; k={ks[i + 1]} has {', '.join(unmet(i + 1))}"
        else:
            after = "; it is the largest k tried: try larger ks"
        steady = f", stability {stable[i]:.3f}" if np.isfinite(stable[i]) else ""
        details["reason"] = (
            f"k={k} is the largest k whose clusters are all separated by >= {SEPARATION_THRESHOLD}, "
            f"stable (>= {STABILITY_THRESHOLD}){share_rule} "
            f"(least separated pair: {separation[i]:.2f}{steady}{after})"
        )
        details["supported"] = True
        return k, details
    details["reason"] = (
        f"no k is clearly supported: none has all its clusters separated by >= {SEPARATION_THRESHOLD}, "
        f"stable (>= {STABILITY_THRESHOLD}){share_rule}; the smallest k is given, read the scores and "
        "label maps"
    )
    details["supported"] = False
    return ks[0], details
