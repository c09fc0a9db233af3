"""Live classification with a model on backend="gpu" under the CUDA simulator gives the CPU
backend's labels, confidence, beam centres and mean patterns."""

import numpy as np
import pytest

import gpu4d
from gpu4d.live import LiveClassifier

from ..test_pipeline import spot_scan

pytestmark = pytest.mark.cudasim


@pytest.mark.parametrize("align", [None, "com"])
def test_live_classifier_gpu_backend_equals_cpu_backend(align):
    data, _ = spot_scan(seed=3, scan=(7, 8), detector=(13, 11))
    other, _ = spot_scan(seed=3, scan=(5, 6), detector=(13, 11))
    model = gpu4d.cluster(data, 3, mask="auto", align=align, exact=True, random_state=0, n_init=2)
    frames = other.reshape(-1, 13, 11)
    results = {}
    for backend in ("cpu", "gpu"):
        live = LiveClassifier(model, (5, 6), backend=backend, batch_size=7)
        for start in range(0, len(frames), 9):
            live.receive(frames[start : start + 9])
            live.process(7)
        results[backend] = live.finish()
    cpu, gpu = results["cpu"], results["gpu"]
    assert gpu.backend == "gpu" and "simulator" in gpu.backend_description
    np.testing.assert_array_equal(gpu.labels, cpu.labels)
    np.testing.assert_allclose(gpu.confidence, cpu.confidence, atol=1e-5)
    np.testing.assert_allclose(gpu.mean_patterns, cpu.mean_patterns, rtol=1e-5, atol=1e-5)
    assert (gpu.centres is None) == (align is None)
    if align:
        np.testing.assert_allclose(gpu.centres, cpu.centres, atol=1e-4)
        assert gpu.extra["alignment"]["frames_shifted"] == cpu.extra["alignment"]["frames_shifted"] > 0
    if align is None:  # and then both are classify's labels (aligned, classify fits the descan)
        np.testing.assert_array_equal(cpu.labels, gpu4d.classify(model, other).labels)
