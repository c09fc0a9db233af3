"""ClusterResult.predict, gpu4d.classify and live classification (LiveClassifier) with
backend="gpu" under the CUDA simulator give the CPU backend's labels, confidence, mean patterns
and beam centres (alignment onto the model's beam included)."""

import numpy as np
import pytest

import gpu4d
from gpu4d.live import LiveClassifier

from ..test_pipeline import spot_scan

pytestmark = pytest.mark.cudasim


def _model_and_other_scan(align):
    """A model of one small spot scan, and a second scan (5, 6) of the same spots."""
    data, _ = spot_scan(seed=3, scan=(7, 8), detector=(13, 11))
    other, _ = spot_scan(seed=3, scan=(5, 6), detector=(13, 11))
    return gpu4d.cluster(data, 3, mask="auto", align=align, exact=True, random_state=0, n_init=2), other


@pytest.mark.parametrize("align", [None, "com"])
def test_gpu_predict_equals_cpu_predict(align):
    model, other = _model_and_other_scan(align)
    cpu = model.predict(other, backend="cpu", batch_size=7, return_distances=True)
    gpu = model.predict(other, backend="gpu", batch_size=7, return_distances=True)
    np.testing.assert_array_equal(gpu.labels, cpu.labels)
    np.testing.assert_allclose(gpu.confidence, cpu.confidence, atol=1e-5)
    np.testing.assert_allclose(gpu.distances, cpu.distances, rtol=1e-5, atol=1e-6)
    cpu_result = gpu4d.classify(model, other, backend="cpu", batch_size=7)
    gpu_result = gpu4d.classify(model, other, backend="gpu", batch_size=7)
    np.testing.assert_allclose(gpu_result.mean_patterns, cpu_result.mean_patterns, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("align", [None, "com"])
def test_live_classifier_gpu_backend_equals_cpu_backend(align):
    model, other = _model_and_other_scan(align)
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
