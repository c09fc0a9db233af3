"""Real-GPU tests: CuPy transfers, pinned double buffering, CUDA kernels on a device, cuML.

Skipped unless ``cupy.cuda.is_available()`` and cuML imports (see ``gpu4d info``). Run on a GPU
machine with ``python -m pytest -m gpu tests/test_gpu.py``.
"""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import gpu4d
from gpu4d.backend import cuda_simulator_enabled, gpu_problem

from .test_pipeline import spot_scan

PROBLEM = "the CUDA simulator is on" if cuda_simulator_enabled() else gpu_problem()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(PROBLEM is not None, reason=f"needs a usable CUDA GPU: {PROBLEM}"),
]


@pytest.mark.parametrize("batch_size", [1, 7, None])
def test_gpu_equals_cpu(batch_size):
    data, truth = spot_scan(seed=0, scan=(24, 20), detector=(33, 31))
    kwargs = dict(mask="auto", transform="sqrt", random_state=0, batch_size=batch_size)
    cpu = gpu4d.cluster(data, 3, backend="cpu", **kwargs)
    gpu = gpu4d.cluster(data, 3, backend="gpu", **kwargs)
    assert gpu.backend == "gpu" and "simulator" not in gpu.backend_description
    assert adjusted_rand_score(truth.ravel(), gpu.labels.ravel()) >= 0.99
    assert adjusted_rand_score(cpu.labels.ravel(), gpu.labels.ravel()) >= 0.99
    np.testing.assert_allclose(gpu.mean_patterns, cpu.mean_patterns, rtol=1e-4)


def test_device_kernel_equals_cpu_kernel():
    import cupy

    from gpu4d.kernels.preprocess import launch_preprocess_cpu
    from gpu4d.kernels.preprocess_cuda import launch_preprocess_cuda

    rng = np.random.default_rng(1)
    raw = rng.poisson(4, (257, 37, 29)).astype(np.uint16)
    ys, xs = (a.astype(np.int32).ravel() for a in np.indices((37, 29)))
    shifts = rng.uniform(-2, 2, (257, 2)).astype(np.float32)
    cpu = np.empty((257, ys.size), np.float32)
    launch_preprocess_cpu(raw, shifts, ys, xs, 1, 2, cpu)
    out = cupy.empty_like(cupy.asarray(cpu))
    launch_preprocess_cuda(*(cupy.asarray(a) for a in (raw, shifts, ys, xs)), 1, 2, out)
    np.testing.assert_allclose(cupy.asnumpy(out), cpu, rtol=1e-5, atol=1e-7)


def test_stream_batches_delivers_every_batch_in_order():
    from gpu4d.backend import get_backend

    backend = get_backend("gpu")
    host = [(i * 5, np.full((5, 4, 3), i, np.uint8)) for i in range(7)]
    seen = [(start, int(batch[0, 0, 0])) for start, batch in backend.device_batches(iter(host))]
    assert seen == [(i * 5, i) for i in range(7)]
