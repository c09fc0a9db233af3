"""The CUDA blur kernel against the CPU kernel, under numba's CUDA simulator, and the GPU
backend's blurred features against the CPU backend's.

Run in its own process: ``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cudasim``. The
simulator runs a few hundred threads a second, so inputs are tiny.
"""

import numpy as np
import pytest
from numba import config

pytestmark = pytest.mark.cudasim

if not config.ENABLE_CUDASIM:
    pytest.skip(
        "CUDA simulator tests: run 'NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cudasim'",
        allow_module_level=True,
    )

import gpu4d  # noqa: E402
from gpu4d.backend import get_backend  # noqa: E402
from gpu4d.kernels import pixel_math  # noqa: E402
from gpu4d.kernels.blur import blur_cpu, gaussian_taps  # noqa: E402
from gpu4d.kernels.blur_cuda import launch_blur_cuda  # noqa: E402

from ..test_pipeline import spot_scan  # noqa: E402

# The CPU kernel sums the two axes in float32 passes, the CUDA one pixel by pixel: round-off.
RTOL = 2e-6


@pytest.mark.parametrize(
    "n, shape, sigma, dtype, tpb",
    [(1, (5, 7), 0.5, np.uint8, 8), (3, (9, 6), 1.0, np.uint16, 16), (2, (7, 8), 1.6, np.float32, 32)],
)
def test_blur_cuda_equals_cpu(n, shape, sigma, dtype, tpb):
    rng = np.random.default_rng(n)
    raw = rng.poisson(4.0, (n, *shape)).astype(dtype)
    raw[0, 0, -1] = 90  # a corner: zero beyond the detector
    if np.dtype(dtype).kind == "f":
        raw -= 2.0
    taps = gaussian_taps(sigma)
    cpu = np.empty(raw.shape, np.float32)
    cuda = np.full(raw.shape, np.nan, np.float32)
    blur_cpu(raw, taps, cpu)
    launch_blur_cuda(raw, taps, cuda, threads_per_block=tpb)
    np.testing.assert_allclose(cuda, cpu, rtol=RTOL, atol=RTOL * np.abs(cpu).max())


@pytest.mark.parametrize("use_shifts", [False, True])
def test_blur_cuda_aligns_and_masks_as_the_cpu_kernel(use_shifts):
    rng = np.random.default_rng(4)
    raw = rng.poisson(3.0, (3, 9, 8)).astype(np.uint16)
    raw[:, 3:6, 3:5] = 900
    keep = np.ones((9, 8), np.float32)
    keep[2:7, 2:6] = 0
    shifts = rng.uniform(-1.5, 1.5, (3, 2)).astype(np.float32) if use_shifts else None
    taps = gaussian_taps(0.8)
    cpu = np.empty(raw.shape, np.float32)
    cuda = np.full(raw.shape, np.nan, np.float32)
    blur_cpu(raw, taps, cpu, shifts=shifts, keep=keep)
    launch_blur_cuda(raw, taps, cuda, shifts=shifts, keep=keep, threads_per_block=16)
    np.testing.assert_allclose(cuda, cpu, rtol=RTOL, atol=RTOL * np.abs(cpu).max())


@pytest.mark.parametrize("use_shifts", [False, True])
def test_gpu_backend_blurred_features_equal_the_cpu_backends(use_shifts):
    rng = np.random.default_rng(7)
    raw = rng.poisson(1.5, (3, 9, 10)).astype(np.uint8)
    keep = np.ones((9, 10), bool)
    keep[3:6, 4:7] = False
    py, px = (a.astype(np.int32) for a in np.nonzero(keep))
    shifts = rng.uniform(-1, 1, (3, 2)).astype(np.float32) if use_shifts else None
    taps = gaussian_taps(1.0)
    rows = {}
    for name in ("cpu", "gpu"):
        backend = get_backend(name)
        out = backend.xp.empty((3, py.size), np.float32)
        backend.preprocess(
            backend.to_device(raw), None if shifts is None else backend.to_device(shifts),
            backend.to_device(py), backend.to_device(px),
            pixel_math.TRANSFORM_SQRT, pixel_math.NORM_MAX, out, taps=backend.to_device(taps),
        )
        rows[name] = backend.to_host(out)
    np.testing.assert_allclose(rows["gpu"], rows["cpu"], rtol=1e-5, atol=1e-6)


def test_gpu_backend_with_a_blur_gives_the_cpu_labels():
    data, _ = spot_scan(seed=3, scan=(6, 7), detector=(12, 11))
    kwargs = dict(blur=1.2, random_state=0, batch_size=16)
    cpu = gpu4d.cluster(data, 3, backend="cpu", **kwargs)
    gpu = gpu4d.cluster(data, 3, backend="gpu", **kwargs)
    assert gpu.parameters["blur_px"] == 1.2
    np.testing.assert_array_equal(gpu.labels, cpu.labels)
    np.testing.assert_allclose(gpu.centroids, cpu.centroids, rtol=1e-4, atol=1e-6)
