"""Everything that only a real CUDA GPU runs: CuPy allocations, pinned memory, streams, cuML.

Imported only by ``GpuBackend`` on a machine where ``cupy.cuda.is_available()``; never under the
simulator and never on the CPU path. Tested by the ``@pytest.mark.gpu`` tests and
``benchmarks/bench_gpu.py`` (``benchmarks/gpu_check.sh`` runs both), which need a GPU.

The stream discipline of the GPU path
-------------------------------------
All of it is here and in ``kernels._targets`` (the launch rules); the passes above know nothing
of streams.

1. **A kernel runs on the stream CuPy considers current** (``cupy.cuda.get_current_stream()``,
   wrapped with ``numba.cuda.external_stream``; ``_targets.cuda_stream``). The CuPy operations
   that make a kernel's inputs and read its outputs run on that same stream, so stream order
   alone sequences them: ``xp.zeros`` -> atomics -> the reads of the sums, with no host wait.
   CuPy's memory pool is stream-ordered too: a block returns, when freed, to the pool of the
   stream it was allocated on and is handed out only to allocations on that stream, whose
   later work runs after the kernels queued before.
2. **numba does not synchronize arguments** (``as_cuda_array(..., sync=False)``;
   ``_targets.cuda_args``). By default numba synchronizes, before every launch, the stream each
   CuPy argument names (the current one): a host wait per argument, which serialized every copy
   behind every kernel. Rule 1 makes the wait unnecessary.
3. **Batches**: ``stream_batches`` copies batch i+1 from a pinned host buffer on
   ``copy_stream`` while the kernels of batch i run on ``compute_stream``; an event recorded
   after each copy makes the compute stream wait for it, and an event recorded after each
   batch's work guards the reuse of its pinned and device buffers. While the consumer handles
   a batch, ``compute_stream`` is CuPy's current stream, so its CuPy work and kernels (rule 1)
   go there.
4. **Set-up and results**: arrays made before a pass (``to_device`` of the pixel lists, shifts,
   test matrices, ``xp.zeros`` of accumulators) are made on the caller's stream; the compute
   stream waits for an event recorded there when the pass starts. When the pass ends (or is
   abandoned), the caller's stream waits for an event recorded on the compute stream, so what
   follows on the caller's stream (a matrix product, ``to_host``) sees the pass's results. The
   first event also orders the pass after everything queued on the caller's stream before it:
   an array made during an earlier pass belongs to the compute stream's pool, and once read on
   the caller's stream and freed it may be handed to this pass.
5. **cuML** runs on its own stream: the current stream is synchronized before a fit and the
   device after it (``gpu4d.kmeans.full``); a fit happens a few times per run.

Integer data crosses PCIe as-is (uint8 is a quarter of float32) and is converted by the kernels.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np


class Device:
    """The current CUDA device, its streams and transfer buffers."""

    def __init__(self):
        import cupy
        import cupyx

        self.cupy = cupy
        self._cupyx = cupyx
        self.copy_stream = cupy.cuda.Stream(non_blocking=True)
        self.compute_stream = cupy.cuda.Stream(non_blocking=True)
        self._pinned = [None, None]
        self._staging = [None, None]
        self._done = [None, None]
        #: "cuml" when cuML is installed (it is used), else "xp": ``gpu4d.kmeans.core``'s Lloyd on CuPy
        self.kmeans_engine = kmeans_engine()

    def describe(self) -> str:
        props = self.cupy.cuda.runtime.getDeviceProperties(self.cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        free, total = self.cupy.cuda.runtime.memGetInfo()
        runtime = self.cupy.cuda.runtime.runtimeGetVersion()
        return (
            f"GPU: {name}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free, CUDA {runtime // 1000}."
            f"{runtime % 1000 // 10}, numba CUDA kernels, {describe_kmeans_engine(self.kmeans_engine)}"
        )

    def free_memory_bytes(self) -> int:
        free, _ = self.cupy.cuda.runtime.memGetInfo()
        # memory cached by CuPy's pool is free for us too
        return int(free + self.cupy.get_default_memory_pool().free_bytes())

    def to_device(self, array):
        return self.cupy.asarray(array)

    def to_host(self, array) -> np.ndarray:
        if isinstance(array, np.ndarray):
            return array
        return self.cupy.asnumpy(array)  # waits for the current stream's work

    def synchronize(self) -> None:
        """Wait (on the host) for every stream this device's work uses."""
        self.compute_stream.synchronize()
        self.copy_stream.synchronize()
        self.cupy.cuda.get_current_stream().synchronize()

    def _buffers(self, slot: int, batch: np.ndarray):
        """Pinned host and device buffers of slot 0/1, grown to fit ``batch``."""
        pinned = self._pinned[slot]
        if pinned is None or pinned.dtype != batch.dtype or pinned.size < batch.size:
            self._pinned[slot] = self._cupyx.empty_pinned(batch.size, batch.dtype)
            self._staging[slot] = self.cupy.empty(batch.size, batch.dtype)
        return self._pinned[slot], self._staging[slot]

    def stream_batches(self, host_batches):
        """Yield ``(start, device_batch)``: batch i+1 is copied while batch i is processed.

        While the consumer handles a batch, ``compute_stream`` is CuPy's current stream (rules
        3 and 4 of the module). A slot's buffers are reused only after the work queued on a
        batch in it has finished.
        """
        cupy = self.cupy
        caller = cupy.cuda.get_current_stream()
        _wait(self.compute_stream, caller)  # the set-up arrays the caller made
        try:
            for index, (start, batch) in enumerate(host_batches):
                slot = index % 2
                if self._done[slot] is not None:
                    self._done[slot].synchronize()  # work on the batch last in this slot is done
                pinned, staging = self._buffers(slot, batch)
                host_view = pinned[: batch.size].reshape(batch.shape)
                np.copyto(host_view, batch)
                device_view = staging[: batch.size].reshape(batch.shape)
                device_view.set(host_view, stream=self.copy_stream)
                _wait(self.compute_stream, self.copy_stream)
                with self.compute_stream:
                    yield start, device_view
                done = cupy.cuda.Event(block=False, disable_timing=True)
                done.record(self.compute_stream)
                self._done[slot] = done
        finally:
            _wait(caller, self.compute_stream)  # the caller's stream sees the pass's results


def _wait(waiter, stream) -> None:
    """``waiter`` runs what is queued after this only once ``stream``'s work so far is done."""
    import cupy

    event = cupy.cuda.Event(block=False, disable_timing=True)
    event.record(stream)
    waiter.wait_event(event)


#: Environment variable that picks the GPU's full-dimensional KMeans: "cuml" or "xp" (CuPy Lloyd);
#: by default cuML when it is installed.
KMEANS_ENGINE_VARIABLE = "GPU4D_GPU_KMEANS"


def kmeans_engine() -> str:
    """``"cuml"`` when cuML is installed, else ``"xp"`` (CuPy Lloyd); ``GPU4D_GPU_KMEANS``
    (``cuml`` or ``xp``) chooses, e.g. to compare the two on one machine."""
    chosen = os.environ.get(KMEANS_ENGINE_VARIABLE, "").strip().lower()
    if chosen in ("cuml", "xp"):
        return chosen
    return "cuml" if importlib.util.find_spec("cuml") is not None else "xp"


def describe_kmeans_engine(engine: str) -> str:
    if engine == "cuml":
        return "cuML KMeans"
    return "CuPy KMeans (gpu4d.kmeans.core; cuML is not installed)"
