"""The assignment half of a Lloyd iteration of KMeans on the CPU: each point's nearest centre,
and the sums and sizes of the clusters, in one pass over the points.

The CUDA twin is ``kernels.lloyd_cuda``; both share ``kernels.kmeans_math``. The dot
products with the centres come from a matrix product (``gpu4d.kmeans.core``); what is left is
what numpy does slowly on the sweep's (31k, 16) points: an argmin over a short axis and the one-hot product of the
cluster sums took ~3 ms an iteration, this kernel with the product ~1.4 ms.

Inputs of both kernels
----------------------
dots : (n, k) float32, ``z_i . c_j`` (a matrix product).
centre_norms : (k,) float32, ``||c_j||^2``.
z : (n, c) float32 points.
labels : (n,) int32, written.
sums : (k, c) float64 and counts : (k,) int64: the clusters' sums and sizes, added to (zero
    them first).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import _targets, kmeans_math

_nearest_cpu = _targets.for_cpu(kmeans_math.nearest_centre)


@njit(cache=True)
def assign_and_sum_cpu_kernel(dots, centre_norms, z, labels, sums, counts):
    """CPU kernel, serial: a parallel one was slower at these sizes (thread start-up)."""
    for i in range(z.shape[0]):
        j = _nearest_cpu(dots, centre_norms, i)
        labels[i] = j
        counts[j] += 1
        total = sums[j]
        point = z[i]
        for d in range(point.shape[0]):
            total[d] += point[d]


def assign_and_sum_cpu(dots, centre_norms, z):
    """``(labels (n,) int32, sums (k, c) float64, counts (k,) int64)``."""
    k, c = dots.shape[1], z.shape[1]
    labels = np.empty(z.shape[0], np.int32)
    sums = np.zeros((k, c), np.float64)
    counts = np.zeros(k, np.int64)
    assign_and_sum_cpu_kernel(dots, centre_norms, z, labels, sums, counts)
    return labels, sums, counts
