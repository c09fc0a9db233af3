"""gpu4d.sweep with backend="gpu" under the CUDA simulator gives the CPU backend's labels."""

import pytest
from sklearn.metrics import adjusted_rand_score

import gpu4d

from ..test_pipeline import spot_scan

pytestmark = pytest.mark.cudasim


def test_gpu_sweep_equals_cpu_sweep():
    data, _ = spot_scan(seed=3, scan=(7, 8), detector=(13, 11))
    kwargs = dict(ks=[2, 3], mask="auto", random_state=0, batch_size=20)
    cpu = gpu4d.sweep(data, backend="cpu", **kwargs)
    gpu = gpu4d.sweep(data, backend="gpu", **kwargs)
    assert cpu.ks == gpu.ks
    for k in cpu.ks:
        assert adjusted_rand_score(cpu.labels[k].ravel(), gpu.labels[k].ravel()) == 1.0
    assert gpu.suggested_k == cpu.suggested_k
