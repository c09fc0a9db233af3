"""Live clustering on backend="gpu" under the CUDA simulator gives the CPU backend's result."""

import numpy as np
import pytest

from gpu4d.live import LiveClusterer

from ..test_pipeline import spot_scan

pytestmark = pytest.mark.cudasim


@pytest.mark.parametrize("align", [None, "com"])
def test_live_gpu_backend_equals_cpu_backend(align):
    data, truth = spot_scan(seed=3, scan=(6, 7), detector=(15, 13))
    frames = data.reshape(-1, *data.shape[2:])
    results = {}
    for backend in ("cpu", "gpu"):
        live = LiveClusterer(3, (6, 7), backend=backend, align=align, init_frames=14, batch_size=9,
                             random_state=0)
        for start in range(0, len(frames), 9):
            live.feed(frames[start : start + 9])
        results[backend] = live.finish(refine=False)
    cpu, gpu = results["cpu"], results["gpu"]
    assert gpu.backend == "gpu" and "simulator" in gpu.backend_description
    np.testing.assert_array_equal(gpu.labels, cpu.labels)
    np.testing.assert_allclose(gpu.centroids, cpu.centroids, rtol=1e-4, atol=1e-6)
    if align:
        np.testing.assert_allclose(gpu.centres, cpu.centres, atol=1e-4)


def test_live_refinement_on_the_gpu_backend_equals_cpu():
    """The final Lloyd refinement (tol=0: run until no label changes) works on both backends."""
    data, _ = spot_scan(seed=4, scan=(6, 7), detector=(13, 11))
    frames = data.reshape(-1, *data.shape[2:])
    results = {}
    for backend in ("cpu", "gpu"):
        live = LiveClusterer(3, (6, 7), backend=backend, init_frames=14, batch_size=14, random_state=0)
        for start in range(0, len(frames), 14):
            live.feed(frames[start : start + 14])
        results[backend] = live.finish(refine=True)
    cpu, gpu = results["cpu"], results["gpu"]
    assert gpu.extra["live"]["refined"] and gpu.parameters["tol"] == 0.0
    np.testing.assert_array_equal(gpu.labels, cpu.labels)  # both keep the live label identities
    np.testing.assert_allclose(gpu.centroids, cpu.centroids, rtol=1e-4, atol=1e-6)
