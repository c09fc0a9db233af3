"""Per-point math shared by the CPU and CUDA Lloyd-step kernels.

Plain functions (of scalars and array element reads), compiled for each target by
``kernels._targets``.
"""

from __future__ import annotations


def nearest_centre(dots, centre_norms, i):
    """Index of the centre nearest to point i (the first one on a tie, as argmin).

    ``dots[i, j] = z_i . c_j``. The squared distance is ``||z_i||^2 + ||c_j||^2 - 2 z_i.c_j``;
    its first term is the same for every centre, so ``||c_j||^2 - 2 z_i.c_j`` decides.
    """
    best = 0
    best_value = centre_norms[0] - 2.0 * dots[i, 0]
    for j in range(1, dots.shape[1]):
        value = centre_norms[j] - 2.0 * dots[i, j]
        if value < best_value:
            best = j
            best_value = value
    return best
