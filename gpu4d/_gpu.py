"""Everything that only a real CUDA GPU can run: CuPy allocations, pinned memory, streams, cuML.

Imported only by ``GpuBackend`` on a machine where ``cupy.cuda.is_available()``; never under the
simulator and never on the CPU path. Tested by the ``@pytest.mark.gpu`` tests and
``benchmarks/bench_gpu.py``, which need a GPU.

Batches are streamed with double buffering: the next batch is read from disk into a pinned host
buffer and copied to the device on ``copy_stream`` while the kernels of the current batch run on
``compute_stream``. Integer data crosses PCIe as-is (uint8 is a quarter of float32) and is
converted by the kernels on the device.
"""

from __future__ import annotations

import numpy as np

from .backend import KMeansFit


class Device:
    """The current CUDA device, its streams and transfer buffers."""

    def __init__(self):
        import cupy
        import cupyx
        from numba import cuda

        self.cupy = cupy
        self._cupyx = cupyx
        self._numba_cuda = cuda
        self.copy_stream = cupy.cuda.Stream(non_blocking=True)
        self.compute_stream = cupy.cuda.Stream(non_blocking=True)
        self._pinned = [None, None]
        self._staging = [None, None]
        self._done = [None, None]

    def describe(self) -> str:
        props = self.cupy.cuda.runtime.getDeviceProperties(self.cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        free, total = self.cupy.cuda.runtime.memGetInfo()
        return f"GPU: {name}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free, CUDA kernels, cuML KMeans"

    def free_memory_bytes(self) -> int:
        free, _ = self.cupy.cuda.runtime.memGetInfo()
        # memory cached by CuPy's pool is free for us too
        return int(free + self.cupy.get_default_memory_pool().free_bytes())

    def to_device(self, array):
        return self.cupy.asarray(array)

    def to_host(self, array) -> np.ndarray:
        if isinstance(array, np.ndarray):
            return array
        return self.cupy.asnumpy(array)

    def synchronize(self) -> None:
        self.compute_stream.synchronize()
        self.copy_stream.synchronize()

    def numba_compute_stream(self):
        """The compute stream, as numba sees it, for kernel launches."""
        return self._numba_cuda.external_stream(self.compute_stream.ptr)

    def _buffers(self, slot: int, batch: np.ndarray):
        """Pinned host and device buffers of slot 0/1, grown to fit ``batch``."""
        pinned = self._pinned[slot]
        if pinned is None or pinned.dtype != batch.dtype or pinned.size < batch.size:
            self._pinned[slot] = self._cupyx.empty_pinned(batch.size, batch.dtype)
            self._staging[slot] = self.cupy.empty(batch.size, batch.dtype)
        return self._pinned[slot], self._staging[slot]

    def stream_batches(self, host_batches):
        """Yield ``(start, device_batch)``: batch i+1 is copied while batch i is processed.

        The consumer launches its kernels on ``compute_stream`` before asking for the next
        batch; a slot's buffers are reused only after those kernels have finished.
        """
        cupy = self.cupy
        for index, (start, batch) in enumerate(host_batches):
            slot = index % 2
            if self._done[slot] is not None:
                self._done[slot].synchronize()  # kernels that read this slot are finished
            pinned, staging = self._buffers(slot, batch)
            host_view = pinned[: batch.size].reshape(batch.shape)
            np.copyto(host_view, batch)
            device_view = staging[: batch.size].reshape(batch.shape)
            device_view.set(host_view, stream=self.copy_stream)
            copied = cupy.cuda.Event()
            copied.record(self.copy_stream)
            self.compute_stream.wait_event(copied)
            with self.compute_stream:
                yield start, device_view
            done = cupy.cuda.Event()
            done.record(self.compute_stream)
            self._done[slot] = done
        self.synchronize()

    def cuml_kmeans(self, features, n_clusters, n_init, max_iter, tol, random_state, init=None) -> KMeansFit:
        from cuml.cluster import KMeans

        self.synchronize()
        model = KMeans(
            n_clusters=n_clusters,
            init="scalable-k-means++" if init is None else self.cupy.asarray(init, np.float32),
            n_init=n_init if init is None else 1,
            max_iter=max_iter,
            tol=tol,
            random_state=random_state,
            output_type="cupy",
        )
        model.fit(features)
        return KMeansFit(
            labels=self.to_host(model.labels_).astype(np.int32),
            centers=self.to_host(model.cluster_centers_).astype(np.float32),
            inertia=float(model.inertia_),
            n_iter=int(model.n_iter_),
        )
