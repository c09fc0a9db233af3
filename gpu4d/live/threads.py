"""The threads live processing uses (one home for the clusterer's and the classifier's rule)."""

from __future__ import annotations

_BLAS = None


def processing_threads():
    """A context in which host BLAS/LAPACK run single-threaded.

    The live loop's matmuls are thin ((n, m) x (m, k), memory-bound) and its LAPACK calls
    small; the numba kernels and the receiving thread already keep the cores busy, and
    OpenBLAS threads that spin-wait for a core slow them down many times over (a 4000 x 40
    SVD: 1 s with 2 threads on a busy 2-core machine, 17 ms with one). numba's kernels keep
    their threads: leaving a core to the receiving thread (numba on all cores but one) did
    not change the live rate measured through the CLI on 2 cores (bench_live.py --cli).
    """
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")
