"""The CPU backend: numpy arrays, numba CPU kernels, ``gpu4d.kmeans``'s Lloyd."""

from __future__ import annotations

import os

import numpy as np

from ..kmeans.core import KMeansFit


class CpuBackend:
    """numpy arrays, numba CPU kernels, gpu4d.kmeans's Lloyd with the numba assign-and-sum kernel."""

    name = "cpu"
    kernel_target = "cpu"
    simulated = False
    xp = np

    def describe(self) -> str:
        import numba

        return f"CPU: numba {numba.__version__} kernels on {os.cpu_count()} cores, gpu4d KMeans (numba Lloyd kernel)"

    # transfers -----------------------------------------------------------------------------
    def to_device(self, array):
        return np.asarray(array)

    def to_host(self, array) -> np.ndarray:
        return np.asarray(array)

    def device_batches(self, host_batches):
        """Yield ``(start, batch)`` ready for the kernels; the CPU needs no transfer."""
        yield from host_batches

    def synchronize(self) -> None:
        pass

    def free_memory_bytes(self) -> int | None:
        return None

    # kernels ------------------------------------------------------------------------------
    def preprocess(self, raw, shifts, pixel_y, pixel_x, transform, norm, out, taps=None):
        """Feature rows of a batch (``kernels.preprocess``), each pattern first blurred over
        the detector by the Gaussian ``taps`` when given (``kernels.blur``)."""
        from ..kernels.blur import blur_preprocess_cpu
        from ..kernels.preprocess import launch_preprocess_cpu, pixel_runs

        # the kept pixels as runs, computed once per pixel list (passes call this per chunk)
        runs = self._per_pixel_list("runs", pixel_y, pixel_x, lambda: pixel_runs(pixel_y, pixel_x))
        if taps is not None:  # one fused kernel: blur, then gather, transform, normalize
            keep = self._kept_grid(pixel_y, pixel_x, raw.shape[1:])
            return blur_preprocess_cpu(raw, taps, runs, transform, norm, out, shifts=shifts, keep=keep)
        return launch_preprocess_cpu(raw, shifts, pixel_y, pixel_x, transform, norm, out, runs=runs)

    def _per_pixel_list(self, name, pixel_y, pixel_x, make, shape=None):
        """``make()``, computed once per kept-pixel list (and detector shape): the passes call
        the kernels chunk by chunk with the same arrays."""
        cache = self.__dict__.setdefault("_pixel_list_cache", {})
        cached = cache.get(name)
        if cached is None or cached[0] is not pixel_y or cached[1] is not pixel_x or cached[2] != shape:
            cached = cache[name] = (pixel_y, pixel_x, shape, make())
        return cached[3]

    def _kept_grid(self, pixel_y, pixel_x, detector_shape):
        """(qy, qx) float32 of the backend's arrays, 1 at the kept pixels (``kernels.blur``)."""
        from ..kernels.blur import kept_grid

        return self._per_pixel_list(
            "keep", pixel_y, pixel_x, lambda: kept_grid(pixel_y, pixel_x, detector_shape, self.xp), tuple(detector_shape)
        )

    def add_transposed_product(self, c, a, b) -> None:
        """``c += a.T @ b`` in place, without an (m, l) temporary: one BLAS call when ``c`` is a
        Fortran-ordered float32 array (``a`` (r, m) and ``b`` (r, l) float32)."""
        if c.dtype == np.float32 and c.flags.f_contiguous and a.flags.c_contiguous:
            from scipy.linalg.blas import sgemm

            sgemm(1.0, a.T, b, beta=1.0, c=c, overwrite_c=True)
        else:
            c += a.T @ b

    def add_label_sums(self, rows, labels, sums, column_squares=None) -> None:
        """``sums[labels[i, c]] += rows[i]`` for every row and label column (float64 sums);
        ``column_squares += rows ** 2`` summed over the rows, if given."""
        from ..kernels.label_sums import launch_label_sums_cpu

        launch_label_sums_cpu(rows, labels, sums, column_squares)

    def squared_distances(self, rows, centres, centre_norms):
        """(n, k) float64 ``||x||^2 - 2 x.c + ||c||^2`` of float32 ``rows`` to float64
        ``centres`` (``centre_norms`` their squared norms), not clipped: float64 because it
        cancels in float32 near a centre. One numba pass over each row (``kernels.distances``)."""
        from ..kernels.distances import launch_squared_distances_cpu

        return launch_squared_distances_cpu(rows, centres, centre_norms)

    def assign_and_sum(self, dots, centre_norms, z):
        """Nearest centres and the clusters' sums and sizes: ``gpu4d.kmeans.core``'s Lloyd step."""
        from ..kernels.lloyd import assign_and_sum_cpu

        return assign_and_sum_cpu(dots, centre_norms, z)

    # clustering ---------------------------------------------------------------------------
    def kmeans(self, features, n_clusters, *, n_init, max_iter, tol, random_state, init=None) -> KMeansFit:
        """Full-dimensional KMeans (``gpu4d.kmeans.full``): the core's Lloyd with the numba
        assign-and-sum kernel; scikit-learn's meaning of ``n_init``, ``tol`` and ``max_iter``."""
        from ..kmeans.full import full_kmeans

        return full_kmeans(
            np, features, n_clusters, n_init=n_init, max_iter=max_iter, tol=tol,
            random_state=random_state, init=init, engine="xp", assign_and_sum=self.assign_and_sum,
        )
