"""ClusterResult.predict and gpu4d.classify with backend="gpu" under the CUDA simulator give
the CPU backend's labels, confidence and mean patterns (alignment onto the model's beam included)."""

import numpy as np
import pytest

import gpu4d

from ..test_pipeline import spot_scan

pytestmark = pytest.mark.cudasim


@pytest.mark.parametrize("align", [None, "com"])
def test_gpu_predict_equals_cpu_predict(align):
    data, _ = spot_scan(seed=3, scan=(7, 8), detector=(13, 11))
    other, _ = spot_scan(seed=3, scan=(5, 6), detector=(13, 11))
    model = gpu4d.cluster(data, 3, mask="auto", align=align, exact=True, random_state=0, n_init=2)
    cpu = model.predict(other, backend="cpu", batch_size=7, return_distances=True)
    gpu = model.predict(other, backend="gpu", batch_size=7, return_distances=True)
    np.testing.assert_array_equal(gpu.labels, cpu.labels)
    np.testing.assert_allclose(gpu.confidence, cpu.confidence, atol=1e-5)
    np.testing.assert_allclose(gpu.distances, cpu.distances, rtol=1e-5, atol=1e-6)
    cpu_result = gpu4d.classify(model, other, backend="cpu", batch_size=7)
    gpu_result = gpu4d.classify(model, other, backend="gpu", batch_size=7)
    np.testing.assert_allclose(gpu_result.mean_patterns, cpu_result.mean_patterns, rtol=1e-5, atol=1e-5)
