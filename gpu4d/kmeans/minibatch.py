"""Mini-batch KMeans over an array module (numpy or cupy): scikit-learn's update.

The update runs on the device where the features already are: assignments and per-cluster sums
come from :mod:`gpu4d.kmeans.core` (:func:`~gpu4d.kmeans.core.assign`,
:func:`~gpu4d.kmeans.core.cluster_sums`), and each centre moves by scikit-learn's count-based
learning rate (it is the running mean of every point ever assigned to it). With ``counts``
starting at 0 and no reassignment it is exactly
``sklearn.cluster.MiniBatchKMeans(reassignment_ratio=0).partial_fit``. Live clustering
(``gpu4d.live``) folds each batch of frames in with it.
"""

from __future__ import annotations

import numpy as np

from gpu4d.errors import InputError

from . import core

__all__ = ["MiniBatchKMeans"]


class MiniBatchKMeans:
    """Mini-batch KMeans over an array module (numpy or cupy): scikit-learn's update.

    Parameters
    ----------
    n_clusters : int
        k >= 1.
    xp : module
        ``numpy`` or ``cupy``; the data given to :meth:`partial_fit` lives there.

    Attributes
    ----------
    cluster_centers_ : (k, m) float32 array of ``xp``
    counts_ : (k,) float64 array of ``xp``
        Points folded into each centre so far; a batch moves a centre by the share
        ``batch points / counts_`` (scikit-learn's count-based learning rate).
    n_steps_ : int
        Mini-batch steps taken.

    Notes
    -----
    scikit-learn also moves clusters with few points onto random points now and then
    (``reassignment_ratio``); that makes labels jump, which a live display must avoid, so it is
    left out here (``LiveClusterer`` re-seeds from its sample instead, matching identities).
    With ``counts_`` starting at 0 the result equals
    ``sklearn.cluster.MiniBatchKMeans(init=centers, reassignment_ratio=0).partial_fit``.
    """

    def __init__(self, n_clusters: int, *, xp=np) -> None:
        self.n_clusters = n_clusters
        self.xp = xp
        self.cluster_centers_ = None
        self.counts_ = None
        self.n_steps_ = 0

    def set_centers(self, centers, counts=None) -> MiniBatchKMeans:
        """Start from centres (k, m); ``counts`` (k,) defaults to zeros (scikit-learn's start)."""
        xp = self.xp
        centers = xp.asarray(centers, dtype=np.float32)
        if centers.ndim != 2 or centers.shape[0] != self.n_clusters:
            raise InputError(
                f"centers.shape={tuple(centers.shape)} should be (n_clusters={self.n_clusters}, m)."
            )
        self.cluster_centers_ = xp.array(centers, copy=True)
        if counts is None:
            self.counts_ = xp.zeros(self.n_clusters, np.float64)
        else:
            self.counts_ = xp.array(xp.asarray(counts, np.float64), copy=True)
        return self

    def predict(self, z):
        """Labels (n,) int32 of the rows of ``z`` (n, m) under the current centres."""
        return self.assign(z)[0]

    def assign(self, z):
        """Labels (n,) int32 and squared distances (n,) of the rows of ``z`` to their centres."""
        return core.assign(self.xp, z, self.cluster_centers_)

    def update(self, z, labels, include=None) -> None:
        """Fold the rows of ``z`` with their ``labels`` into the centres.

        Each centre becomes the mean of every point ever folded into it:
        ``c <- (c * count + sum of its new points) / (count + number of its new points)``.
        ``include`` (n,) bool leaves rows out of the update (they are still labelled).
        """
        self.apply(*self.accumulate(z, labels, include))

    def accumulate(self, z, labels, include=None):
        """Per-cluster sums (k, m) float32 and counts (k,) float64 of rows of ``z`` (a batch may
        be accumulated in parts, all assigned with the same centres, then applied once)."""
        return core.cluster_sums(self.xp, z, labels, self.n_clusters, weights=include)

    def apply(self, sums, batch_counts) -> None:
        """One mini-batch step from accumulated ``sums`` and ``batch_counts``."""
        xp = self.xp
        centers = self.cluster_centers_
        new_counts = self.counts_ + batch_counts
        scale = xp.maximum(new_counts, 1.0)[:, None].astype(np.float32)
        updated = (centers * self.counts_[:, None].astype(np.float32) + sums) / scale
        self.cluster_centers_ = xp.where((batch_counts > 0)[:, None], updated, centers).astype(np.float32)
        self.counts_ = new_counts
        self.n_steps_ += 1

    def partial_fit(self, z):
        """One mini-batch step on ``z`` (n, m) float32.

        Returns
        -------
        labels : (n,) int32 array of ``xp``
            The assignments made before the update (as scikit-learn's are).
        distances : (n,) float32 array of ``xp``
            Squared distance of each point to the centre it was assigned to.
        """
        if self.cluster_centers_ is None:
            raise InputError("MiniBatchKMeans: call set_centers before partial_fit.")
        labels, distances = self.assign(z)
        self.update(z, labels)
        return labels, distances

    def permute(self, order) -> None:
        """Reorder the clusters: new cluster i is old cluster ``order[i]``."""
        order = self.xp.asarray(np.asarray(order, np.int64))
        self.cluster_centers_ = self.cluster_centers_[order]
        self.counts_ = self.counts_[order]
