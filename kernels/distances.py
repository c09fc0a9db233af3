"""Float64 squared distances of float32 rows to a few float64 centres, on the CPU.

``||x||^2 - 2 x.c + ||c||^2`` in float64 (``backend.CpuBackend.squared_distances``, for
``classify``'s ``Distances`` pass and live classification; float64 because it cancels in
float32 when x is near c), in one pass over each row instead of
numpy's float64 copy of the rows, its squares and a thin (n, m) x (m, k) dgemm: ~10x faster
for the live classifier's (n, 20000) x (20000, k <= 16) chunks, which it otherwise spent most
of its time on. The sums are reassociated (vectorized), so a result differs from numpy's by a
few float64 ulps of ``||x||^2``: labels differ only between centres equidistant to ~1e-15.

On the GPU the same formula runs as array operations (``backend.GpuBackend.squared_distances``:
memory-bound on the device anyway); there is no CUDA twin.

Inputs
------
rows : (n, m) float32.
centres : (k, m) float64, C-contiguous.
centre_norms : (k,) float64, ``||c_j||^2``.
out : (n, k) float64, written with the squared distances (not clipped at 0).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def squared_distances_cpu_kernel(rows, centres, centre_norms, out):
    """CPU kernel, serial (the live loop's other thread receives frames); ``reassoc`` lets
    numba vectorize each dot product."""
    for i in range(rows.shape[0]):
        row = rows[i]
        norm = 0.0
        for d in range(row.shape[0]):
            x = np.float64(row[d])
            norm += x * x
        for j in range(centres.shape[0]):
            centre = centres[j]
            dot = 0.0
            for d in range(row.shape[0]):
                dot += np.float64(row[d]) * centre[d]
            out[i, j] = norm - 2.0 * dot + centre_norms[j]


def launch_squared_distances_cpu(rows, centres, centre_norms, out=None):
    """(n, k) float64 squared distances (see the module); ``out`` written when given."""
    if out is None:
        out = np.empty((rows.shape[0], centres.shape[0]), np.float64)
    # a centroid slice such as model.centroids[:, py, px] comes Fortran-ordered: the kernel
    # then compiles for any layout, reads the centres across cache lines and runs ~6x slower
    centres = np.ascontiguousarray(centres, np.float64)
    rows = np.ascontiguousarray(rows)
    if rows.shape[0]:
        squared_distances_cpu_kernel(rows, centres, centre_norms, out)
    return out
