"""backend="gpu" end to end under the CUDA simulator gives the CPU backend's labels."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import gpu4d

from ..test_pipeline import spot_scan

pytestmark = pytest.mark.cudasim


def test_gpu_backend_equals_cpu_backend():
    data, truth = spot_scan(seed=1, scan=(8, 9), detector=(13, 11))
    kwargs = dict(mask="auto", normalize="max", transform="sqrt", random_state=0, batch_size=20)
    cpu = gpu4d.cluster(data, 3, backend="cpu", **kwargs)
    gpu = gpu4d.cluster(data, 3, backend="gpu", **kwargs)
    assert gpu.backend == "gpu" and "simulator" in gpu.backend_description
    assert adjusted_rand_score(cpu.labels.ravel(), gpu.labels.ravel()) == 1.0
    np.testing.assert_allclose(gpu.centroids, cpu.centroids, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gpu.mean_patterns, cpu.mean_patterns, rtol=1e-5)
    assert adjusted_rand_score(truth.ravel(), gpu.labels.ravel()) == 1.0


def test_auto_does_not_pick_the_simulator():
    data, _ = spot_scan(seed=1, scan=(4, 5), detector=(9, 9))
    with pytest.warns(UserWarning, match="simulator"):
        result = gpu4d.cluster(data, 2, backend="auto")
    assert result.backend == "cpu"


@pytest.mark.parametrize("align", ["com", "fit"])
def test_aligned_gpu_backend_equals_cpu_backend(align):
    data, _ = spot_scan(seed=2, scan=(6, 7), detector=(15, 13))
    kwargs = dict(mask="auto", align=align, random_state=0, batch_size=16)
    cpu = gpu4d.cluster(data, 3, backend="cpu", **kwargs)
    gpu = gpu4d.cluster(data, 3, backend="gpu", **kwargs)
    np.testing.assert_allclose(gpu.centres, cpu.centres, atol=1e-4)
    assert adjusted_rand_score(cpu.labels.ravel(), gpu.labels.ravel()) == 1.0


def test_simulated_backend_arrays_refuse_host_arrays_as_cupy_does():
    from gpu4d.backend.simulated_xp import HostDeviceMixError
    from gpu4d.backend import get_backend

    backend = get_backend("gpu")
    batches = list(backend.device_batches([(0, np.zeros((2, 3, 3), np.uint8))]))
    device = batches[0][1]
    with pytest.raises(HostDeviceMixError):
        device + np.ones((2, 3, 3), np.uint8)
    assert type(backend.to_host(device)) is np.ndarray


def test_a_forgotten_transfer_fails_under_the_simulator(monkeypatch):
    """A pipeline step that kept a host array where a device one belongs fails here, not first
    on a GPU: ``to_device`` made a no-op, the mean-pattern pass mixes host labels with device
    cluster ids."""
    from gpu4d.backend.simulated_xp import HostDeviceMixError
    from gpu4d.backend import GpuBackend

    monkeypatch.setattr(GpuBackend, "to_device", lambda self, array: np.asarray(array))
    data, _ = spot_scan(seed=1, scan=(4, 5), detector=(9, 9))
    with pytest.raises(HostDeviceMixError):
        gpu4d.cluster(data, 2, backend="gpu", mask="auto", batch_size=10)
