"""Label numbers that follow the regions across the ks of a sweep.

KMeans numbers its clusters arbitrarily, so the same region would get a different label (and
colour) at every k. Going up the ks, each k's clusters are matched to the previous k's labels by
their overlap (the number of scan positions they share), maximized over one-to-one assignments
(the Hungarian method, ``scipy.optimize.linear_sum_assignment``); the clusters left over, the
new ones, take the next labels, largest first.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def matching_permutation(previous: np.ndarray, current: np.ndarray, k_previous: int, k: int) -> np.ndarray:
    """``perm`` (k,) int: current label ``j`` becomes ``perm[j]``, so that the clusters that
    overlap most with the previous labelling keep its numbers (``k >= k_previous``)."""
    from scipy.optimize import linear_sum_assignment  # here: a 0.3 s import cluster (one k) never needs

    overlap = np.zeros((k_previous, k), np.int64)
    np.add.at(overlap, (previous.ravel(), current.ravel()), 1)
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    perm = np.full(k, -1, np.int64)
    perm[cols] = rows
    left = np.flatnonzero(perm < 0)
    sizes = np.bincount(current.ravel(), minlength=k)
    left = left[np.argsort(-sizes[left], kind="stable")]
    perm[left] = np.arange(len(rows), len(rows) + len(left))
    return perm


def relabel(result, perm: np.ndarray):
    """A copy of a ClusterResult with its clusters renumbered by ``perm`` (old -> new)."""
    order = np.argsort(perm)  # new label i is old cluster order[i]
    return dataclasses.replace(
        result,
        labels=perm[result.labels].astype(result.labels.dtype),
        centroids=result.centroids[order],
        mean_patterns=result.mean_patterns[order],
        cluster_sizes=np.asarray(result.cluster_sizes)[order],
    )


def consistent_labels(results: dict) -> dict:
    """``{k: ClusterResult}`` renumbered so that a region keeps its label from one k to the next
    (the smallest k keeps KMeans' numbers)."""
    ks = sorted(results)
    out = {ks[0]: results[ks[0]]}
    for previous_k, k in zip(ks, ks[1:]):
        perm = matching_permutation(out[previous_k].labels, results[k].labels, previous_k, k)
        out[k] = relabel(results[k], perm)
    return out
