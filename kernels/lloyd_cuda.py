"""The assignment half of a Lloyd iteration of KMeans on the GPU (numba CUDA).

Same inputs and results as ``kernels.lloyd`` (see there); imported only by the GPU engine and
by the simulator tests, because it imports ``numba.cuda``.
"""

from __future__ import annotations

import functools

from numba import cuda

from . import _targets, kmeans_math

#: Threads per block; a thread per point.
THREADS_PER_BLOCK = 256


@functools.cache
def assign_and_sum_cuda_kernel():
    """Build the kernel: a thread per point finds its nearest centre and adds the point to its
    cluster's sums and size with atomic additions."""
    nearest = _targets.for_cuda(kmeans_math.nearest_centre)

    @cuda.jit
    def kernel(dots, centre_norms, z, labels, sums, counts):
        i = cuda.grid(1)
        if i >= z.shape[0]:
            return
        j = nearest(dots, centre_norms, i)
        labels[i] = j
        cuda.atomic.add(counts, j, 1)
        for d in range(z.shape[1]):
            cuda.atomic.add(sums, (j, d), z[i, d])

    return kernel


def launch_assign_and_sum_cuda(dots, centre_norms, z, labels, sums, counts, *, stream=None, threads_per_block=None):
    """Launch the kernel over the points (device or, under the simulator, host arrays).

    ``stream=None`` launches on the stream CuPy considers current (``_targets.cuda_stream``),
    the one that zeroed ``sums`` and ``counts`` and that will read them.
    """
    tpb = threads_per_block or THREADS_PER_BLOCK
    n = z.shape[0]
    if n:
        blocks = (n + tpb - 1) // tpb
        args = _targets.cuda_args(dots, centre_norms, z, labels, sums, counts)
        assign_and_sum_cuda_kernel()[blocks, tpb, _targets.cuda_stream(stream)](*args)
