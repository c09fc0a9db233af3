"""Label identities across refits: which new centroid continues which old one."""

from __future__ import annotations

import numpy as np

from ..arrays import to_host


def match_centroids(previous, current) -> np.ndarray:
    """The order of ``current`` centroids that best continues ``previous`` (stable labels).

    Parameters
    ----------
    previous, current : (k, m) arrays (numpy or cupy)

    Returns
    -------
    order : (k,) int64 numpy array
        ``current[order]`` puts at position i the centroid matched to ``previous[i]`` (minimum
        total squared distance, ``scipy.optimize.linear_sum_assignment``); a label ``j`` under
        ``current`` becomes ``argsort(order)[j]``.
    """
    from scipy.optimize import linear_sum_assignment

    a = to_host(previous).astype(np.float64)
    b = to_host(current).astype(np.float64)
    cost = (a * a).sum(1)[:, None] - 2.0 * a @ b.T + (b * b).sum(1)[None, :]
    rows, cols = linear_sum_assignment(cost)
    order = np.empty(len(rows), np.int64)
    order[rows] = cols
    return order
