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


def test_gpu_tiled_blurred_sketch_equals_cpu():
    """The sketch's axes from a tiled quarter of the scan (one 4x4 tile of 8x8, blurred within
    it: ``sample_tiles``, ``blur_over_scan``), on the simulated GPU backend as on the CPU."""
    import numpy as np
    from scipy.linalg import subspace_angles

    from gpu4d.backend import get_backend
    from gpu4d.engine import InlineExecutor, RowRecipe
    from gpu4d.io.dataset import open_dataset
    from gpu4d.preprocessing import NORMALIZATIONS, TRANSFORMS
    from gpu4d.sketch import streaming_sketch

    from ..test_sweep import region_scan

    data, _ = region_scan(seed=2, scan=(8, 8), q=6)  # small: the simulator runs every thread
    pixels = tuple(a.astype(np.int32).ravel() for a in np.indices(data.shape[2:]))
    sketches = {}
    for name in ("cpu", "gpu"):
        backend = get_backend(name)
        executor = InlineExecutor(open_dataset(data), backend, 64)
        recipe = RowRecipe(pixels[0], pixels[1], TRANSFORMS["none"], NORMALIZATIONS["none"], None)
        sketch = streaming_sketch(executor, recipe, sketch_size=8, random_state=0, basis_blur=0.7, min_sample=4)
        sketches[name] = (backend.to_host(sketch.components), sketch.singular_values)
    (cpu_axes, cpu_values), (gpu_axes, gpu_values) = sketches["cpu"], sketches["gpu"]
    np.testing.assert_allclose(gpu_values[:3], cpu_values[:3], rtol=1e-4)
    assert np.degrees(subspace_angles(cpu_axes[:, :3], gpu_axes[:, :3])).max() < 0.1
