"""Backends: what differs between the CPU and the GPU, chosen once and passed down.

A backend holds the array module (numpy or cupy), the kernel engine (numba CPU kernels or
numba CUDA kernels), the KMeans engine (``gpu4d.kmeans``'s Lloyd; cuML when installed) and the
host/device transfers. Everything above it (``gpu4d.pipeline``) is one code path.

The GPU backend runs in three settings:

* a real GPU: cupy arrays, CUDA kernels, cuML (or, without it, ``gpu4d.kmeans``'s Lloyd on CuPy),
  pinned double-buffered transfers (``_gpu``, which states the stream discipline);
* numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``): the same CUDA kernels run on the CPU
  over numpy arrays that refuse to mix with host arrays, as CuPy's do (``simulated_xp``), and
  the CuPy KMeans code runs on them. This is how CI checks the GPU path;
* no GPU: ``backend="gpu"`` raises BackendUnavailable, ``backend="auto"`` warns and uses the CPU.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import numpy as np

from .errors import BackendUnavailable, InputError
from .kmeans.core import KMeansFit

BACKEND_NAMES = ("cpu", "gpu", "auto")
GPU_INSTALL_HINT = (
    "install the GPU extra with: pip install 'gpu4d[gpu]' (CUDA 12 driver needed; a CUDA 13 "
    "CuPy with numba-cuda[cu13] works too, and cuML is optional)"
)


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
    def preprocess(self, raw, shifts, pixel_y, pixel_x, transform, norm, out):
        from .kernels.preprocess import launch_preprocess_cpu, pixel_runs

        # the kept pixels as runs, computed once per pixel list (passes call this per chunk)
        cached = getattr(self, "_runs", None)
        if cached is None or cached[0] is not pixel_y or cached[1] is not pixel_x:
            cached = self._runs = (pixel_y, pixel_x, pixel_runs(pixel_y, pixel_x))
        return launch_preprocess_cpu(raw, shifts, pixel_y, pixel_x, transform, norm, out, runs=cached[2])

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
        from .kernels.label_sums import launch_label_sums_cpu

        launch_label_sums_cpu(rows, labels, sums, column_squares)

    def squared_distances(self, rows, centres, centre_norms):
        """(n, k) float64 ``||x||^2 - 2 x.c + ||c||^2`` of float32 ``rows`` to float64
        ``centres`` (``centre_norms`` their squared norms), not clipped: float64 because it
        cancels in float32 near a centre. One numba pass over each row (``kernels.distances``)."""
        from .kernels.distances import launch_squared_distances_cpu

        return launch_squared_distances_cpu(rows, centres, centre_norms)

    def assign_and_sum(self, dots, centre_norms, z):
        """Nearest centres and the clusters' sums and sizes: ``gpu4d.kmeans.core``'s Lloyd step."""
        from .kernels.lloyd import assign_and_sum_cpu

        return assign_and_sum_cpu(dots, centre_norms, z)

    # clustering ---------------------------------------------------------------------------
    def kmeans(self, features, n_clusters, *, n_init, max_iter, tol, random_state, init=None) -> KMeansFit:
        """Full-dimensional KMeans (``gpu4d.kmeans.full``): the core's Lloyd with the numba
        assign-and-sum kernel; scikit-learn's meaning of ``n_init``, ``tol`` and ``max_iter``."""
        from .kmeans.full import full_kmeans

        return full_kmeans(
            np, features, n_clusters, n_init=n_init, max_iter=max_iter, tol=tol,
            random_state=random_state, init=init, engine="xp", assign_and_sum=self.assign_and_sum,
        )


class GpuBackend(CpuBackend):
    """CUDA kernels; CuPy and cuML (or CuPy KMeans) on a real GPU, a strict numpy under the
    simulator.

    Streams: every kernel launches on the stream CuPy considers current (``gpu4d._gpu``'s
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
            from . import _gpu

            self._device = _gpu.Device()
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

    def preprocess(self, raw, shifts, pixel_y, pixel_x, transform, norm, out):
        from .kernels.preprocess_cuda import launch_preprocess_cuda

        return launch_preprocess_cuda(
            raw, shifts, pixel_y, pixel_x, transform, norm, out, threads_per_block=self.threads_per_block,
        )

    def add_transposed_product(self, c, a, b) -> None:
        """``c += a.T @ b`` on the device."""
        c += a.T @ b

    def add_label_sums(self, rows, labels, sums, column_squares=None) -> None:
        from .kernels.label_sums_cuda import launch_label_sums_cuda

        launch_label_sums_cuda(rows, labels, sums, column_squares, threads_per_block=self.threads_per_block)

    def squared_distances(self, rows, centres, centre_norms):
        """The CPU's formula as array operations (memory-bound on the device; no CUDA twin)."""
        f64 = rows.astype(np.float64)
        return (f64**2).sum(axis=1)[:, None] - 2.0 * f64 @ centres.T + centre_norms

    def assign_and_sum(self, dots, centre_norms, z):
        from .kernels.lloyd_cuda import launch_assign_and_sum_cuda

        xp = self.xp
        k = dots.shape[1]
        # made, filled by the kernel and read on the same (current) stream: see gpu4d._gpu
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
        from .kmeans.full import full_kmeans

        return full_kmeans(
            self.xp, features, n_clusters, n_init=n_init, max_iter=max_iter, tol=tol,
            random_state=random_state, init=init, engine=self.kmeans_engine,
        )


def cuda_simulator_enabled() -> bool:
    """True when numba's CUDA simulator is on (decided when numba is first imported)."""
    from numba import config

    return bool(getattr(config, "ENABLE_CUDASIM", False))


def gpu_problem() -> str | None:
    """Why no real GPU backend can run here, or None if one can.

    "Usable" means ``cupy.cuda.is_available()`` (cupy imports fine on a machine without a
    driver and only fails at the first allocation) and numba's CUDA support. Any CuPy build
    (``cupy-cuda12x``, ``cupy-cuda13x``) will do; cuML is optional (``gpu4d.kmeans.full``).
    """
    if importlib.util.find_spec("cupy") is None:
        return "cupy is not installed"
    try:
        import cupy

        if not cupy.cuda.is_available():
            return "no CUDA driver or device found (cupy.cuda.is_available() is False)"
    except Exception as exc:  # noqa: BLE001 - a broken CUDA install raises many kinds
        return f"cupy cannot reach CUDA ({type(exc).__name__}: {exc})"
    if importlib.util.find_spec("numba_cuda") is None and importlib.util.find_spec("numba.cuda") is None:
        return "numba's CUDA support (numba-cuda) is not installed"
    return None


def get_backend(name: str = "auto", *, warn: bool = True):
    """Choose the backend once: ``"cpu"``, ``"gpu"`` or ``"auto"`` (GPU if usable, else CPU).

    ``"gpu"`` also runs under numba's CUDA simulator; ``"auto"`` never picks the simulator.
    """
    if not isinstance(name, str) or name not in BACKEND_NAMES:
        raise InputError(f"backend must be one of {', '.join(BACKEND_NAMES)}; got {name!r}")
    if name == "cpu":
        return CpuBackend()
    if cuda_simulator_enabled():
        if name == "gpu":
            return GpuBackend(simulated=True)
        problem = "numba's CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1) and auto does not use it"
    else:
        problem = gpu_problem()
        if problem is None:
            return GpuBackend(simulated=False)
    if name == "gpu":
        raise BackendUnavailable(f"backend='gpu' cannot run here: {problem}; {GPU_INSTALL_HINT}")
    if warn:
        warnings.warn(f"backend='auto': no usable GPU ({problem}); using the CPU backend", stacklevel=3)
    return CpuBackend()


def backend_report() -> dict[str, str]:
    """For ``gpu4d info``: each backend, and whether it can run here or why not."""
    problem = gpu_problem()
    report = {"cpu": "usable: " + CpuBackend().describe()}
    if problem is None:
        from ._gpu import describe_kmeans_engine, kmeans_engine

        report["gpu"] = f"usable: numba CUDA kernels, {describe_kmeans_engine(kmeans_engine())}"
    else:
        report["gpu"] = f"not usable: {problem}; {GPU_INSTALL_HINT}"
    if cuda_simulator_enabled():
        report["gpu (simulated)"] = "usable: NUMBA_ENABLE_CUDASIM=1, backend='gpu' runs the simulator"
    report["auto"] = "gpu" if problem is None else "cpu"
    return report
