"""The GPU backend: CUDA kernels with CuPy and cuML on a device, or a strict numpy under numba's
CUDA simulator. The transfers and streams it uses are ``gpu4d.backend.device``'s."""

from __future__ import annotations

import numpy as np

from ..kmeans.core import KMeansFit
from .cpu import CpuBackend


class GpuBackend(CpuBackend):
    """CUDA kernels; CuPy and cuML (or CuPy KMeans) on a real GPU, a strict numpy under the
    simulator.

    Streams: every kernel launches on the stream CuPy considers current (``gpu4d.backend.device``'s
    module docstring states the whole discipline).
    """

    name = "gpu"
    kernel_target = "cuda"

    #: The simulator runs each CUDA thread as a Python thread (~1000 threads/s), so simulated
    #: launches use small blocks; the kernels are correct for any power-of-two block size.
    SIMULATOR_THREADS_PER_BLOCK = 8

    def __init__(self, simulated: bool):
        self.simulated = simulated
        self.threads_per_block = self.SIMULATOR_THREADS_PER_BLOCK if simulated else None
        if simulated:
            from . import simulated_xp

            # numpy whose device arrays refuse to mix with host arrays, as CuPy's do
            self.xp = simulated_xp.strict_numpy()
            self._simulated = simulated_xp
            self._device = None
            self.kmeans_engine = "xp"
        else:
            from . import device

            self._device = device.Device()
            self.xp = self._device.cupy
            self.kmeans_engine = self._device.kmeans_engine

    def describe(self) -> str:
        if self.simulated:
            return "GPU (numba CUDA simulator on the CPU; numpy stands in for CuPy: CuPy KMeans code on numpy)"
        return self._device.describe()

    def to_device(self, array):
        return self._simulated.to_device(array) if self.simulated else self._device.to_device(array)

    def to_host(self, array) -> np.ndarray:
        return self._simulated.to_host(array) if self.simulated else self._device.to_host(array)

    def device_batches(self, host_batches):
        if self.simulated:
            for start, batch in host_batches:
                yield start, self.to_device(batch)
        else:
            yield from self._device.stream_batches(host_batches)

    def synchronize(self) -> None:
        if not self.simulated:
            self._device.synchronize()

    def free_memory_bytes(self) -> int | None:
        return None if self.simulated else self._device.free_memory_bytes()

    def kernel_stream(self):
        """The stream CUDA kernels launch on: None, the stream CuPy considers current."""
        return None

    def preprocess(self, raw, shifts, pixel_y, pixel_x, transform, norm, out, taps=None):
        """Feature rows of a batch (``kernels.preprocess_cuda``), each pattern first blurred
        over the detector by the Gaussian ``taps`` (a device array) when given."""
        from ..kernels.preprocess_cuda import launch_preprocess_cuda

        if taps is not None:  # aligned and masked by the blur, then read as they are
            from ..kernels.blur_cuda import launch_blur_cuda

            # made, filled and read on the current stream (see gpu4d.backend.device)
            blurred = self.xp.empty(raw.shape, np.float32)
            keep = self._kept_grid(pixel_y, pixel_x, raw.shape[1:])
            raw = launch_blur_cuda(
                raw, taps, blurred, shifts=shifts, keep=keep, threads_per_block=self.threads_per_block
            )
            shifts = None
        return launch_preprocess_cuda(
            raw, shifts, pixel_y, pixel_x, transform, norm, out, threads_per_block=self.threads_per_block,
        )

    def add_transposed_product(self, c, a, b) -> None:
        """``c += a.T @ b`` on the device."""
        c += a.T @ b

    def add_label_sums(self, rows, labels, sums, column_squares=None) -> None:
        from ..kernels.label_sums_cuda import launch_label_sums_cuda

        launch_label_sums_cuda(rows, labels, sums, column_squares, threads_per_block=self.threads_per_block)

    def squared_distances(self, rows, centres, centre_norms):
        """The CPU's formula as array operations (memory-bound on the device; no CUDA twin)."""
        f64 = rows.astype(np.float64)
        return (f64**2).sum(axis=1)[:, None] - 2.0 * f64 @ centres.T + centre_norms

    def assign_and_sum(self, dots, centre_norms, z):
        from ..kernels.lloyd_cuda import launch_assign_and_sum_cuda

        xp = self.xp
        k = dots.shape[1]
        # made, filled by the kernel and read on the same (current) stream: see gpu4d.backend.device
        labels = xp.empty(z.shape[0], np.int32)
        sums = xp.zeros((k, z.shape[1]), np.float64)
        counts = xp.zeros(k, np.int64)
        launch_assign_and_sum_cuda(dots, centre_norms, z, labels, sums, counts, threads_per_block=self.threads_per_block)
        return labels, sums, counts

    def kmeans(self, features, n_clusters, *, n_init, max_iter, tol, random_state, init=None) -> KMeansFit:
        """Full-dimensional KMeans with the CPU's meaning of ``n_init``, ``tol`` and ``max_iter``
        (``gpu4d.kmeans.full``): cuML's Lloyd when installed, else the core's on CuPy.

        The core's assignment runs in CuPy here (matrix products), as before, not in the CUDA
        assign-and-sum kernel: that kernel adds every pixel of a point to its cluster's sums
        with an atomic, one thread per point, which neighbouring points (mostly in the same
        cluster) contend for when rows are a pattern wide; it is made for the narrow reduced
        coordinates (sweep, regions). Not yet measured on a GPU."""
        from ..kmeans.full import full_kmeans

        return full_kmeans(
            self.xp, features, n_clusters, n_init=n_init, max_iter=max_iter, tol=tol,
            random_state=random_state, init=init, engine=self.kmeans_engine,
        )
