"""The GPU backend's full-dimensional KMeans (``gpu4d.kmeans.full`` in ``xp``, the assignment
in ``xp`` rather than in a kernel) on numpy and on the simulator's strict array module: the same
meaning of n_init, tol and max_iter as the CPU's, checked against scikit-learn. (Its cuML engine
needs a GPU: tests/test_gpu.py.)"""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from gpu4d.backend.simulated_xp import HostDeviceMixError, strict_numpy, to_device
from gpu4d.kmeans.core import mean_feature_variance, row_squared_norms
from gpu4d.kmeans.full import CUML_MIN_TOL, cuml_tolerance, full_kmeans

from .test_sklearn_kmeans import blobs, cpu_kmeans


def matched_centres(a_labels, a_centres, b_labels, b_centres):
    """``b``'s centres reordered to ``a``'s labels (the permutation that best matches them)."""
    k = a_centres.shape[0]
    overlap = np.zeros((k, k))
    np.add.at(overlap, (a_labels, b_labels), 1)
    _, order = linear_sum_assignment(-overlap)
    return b_centres[order]


@pytest.mark.parametrize("module", ["numpy", "strict"])
def test_device_kmeans_agrees_with_cpu_and_sklearn(module):
    x, truth = blobs(3, n=2500, m=120, k=5)
    xp = np if module == "numpy" else strict_numpy()
    features = x if module == "numpy" else to_device(x)
    fit = full_kmeans(xp, features, 5, n_init=4, max_iter=300, tol=1e-4, random_state=0)
    cpu = cpu_kmeans(x, 5, 4, 300, 1e-4, 0)
    reference = KMeans(5, n_init=10, random_state=0).fit(x)
    assert type(fit.labels) is np.ndarray and fit.labels.dtype == np.int32
    assert adjusted_rand_score(truth, fit.labels) == 1.0
    assert adjusted_rand_score(cpu.labels, fit.labels) == 1.0
    np.testing.assert_allclose(
        matched_centres(cpu.labels, cpu.centers, fit.labels, fit.centers), cpu.centers, atol=1e-4
    )
    assert fit.inertia == pytest.approx(reference.inertia_, rel=1e-4)
    assert 1 <= fit.n_iter <= 300


def test_tol_zero_runs_until_no_label_changes_and_init_is_one_run():
    # overlapping blobs, so Lloyd needs several iterations from a poor start
    x, _ = blobs(4, n=1500, m=30, k=4, spread=1.6)
    init = x[:4].copy()
    fit = full_kmeans(np, x, 4, n_init=3, max_iter=500, tol=0.0, random_state=0, init=init)
    reference = KMeans(4, init=init, n_init=1, max_iter=500, tol=0.0).fit(x)
    assert adjusted_rand_score(reference.labels_, fit.labels) == 1.0
    assert fit.n_iter == reference.n_iter_
    assert fit.inertia == pytest.approx(reference.inertia_, rel=1e-5)
    capped = full_kmeans(np, x, 4, n_init=3, max_iter=2, tol=0.0, random_state=0, init=init)
    assert capped.n_iter == 2


def test_cuml_gets_a_positive_tolerance_with_the_cpu_scale():
    # cuVS refuses tol <= 0 (RAFT_EXPECTS(tol > 0)); its tol is absolute, scikit-learn's relative
    assert cuml_tolerance(0.0) == CUML_MIN_TOL > 0
    assert cuml_tolerance(3e-6) == 3e-6
    x, _ = blobs(5, n=900, m=40)
    variance = mean_feature_variance(np, x, row_squared_norms(np, x))
    assert variance == pytest.approx(float(np.var(x.astype(np.float64), axis=0).mean()), rel=1e-5)


def test_unknown_engine_is_refused():
    x, _ = blobs(5, n=50, m=4)
    with pytest.raises(ValueError, match="engine must be one of .*'sklearn'"):
        full_kmeans(np, x, 2, n_init=1, max_iter=10, tol=1e-4, random_state=0, engine="sklearn")


def test_strict_module_refuses_host_device_mixing():
    xp = strict_numpy()
    device = xp.zeros((4, 3), np.float32)
    host = np.ones((4, 3), np.float32)
    for mix in (lambda: device + host, lambda: xp.maximum(device, host), lambda: host @ device.T,
                lambda: np.concatenate([device, host])):
        with pytest.raises(HostDeviceMixError, match=r"host \(numpy\) array of shape \(4, 3\)"):
            mix()
    assert type(device + 1.0).__name__ == "DeviceArray"
    assert type(xp.asarray(host) + device).__name__ == "DeviceArray"  # the explicit transfer
    assert type(device.get()) is np.ndarray


def test_info_says_which_kmeans_the_gpu_backend_uses(monkeypatch):
    import gpu4d.backend

    monkeypatch.setattr(gpu4d.backend, "gpu_problem", lambda: None)
    monkeypatch.setenv("GPU4D_GPU_KMEANS", "cuml")
    assert gpu4d.backend.backend_report()["gpu"] == "usable: numba CUDA kernels, cuML KMeans"
    monkeypatch.setenv("GPU4D_GPU_KMEANS", "xp")
    report = gpu4d.backend.backend_report()
    assert report["gpu"].startswith("usable: numba CUDA kernels, CuPy KMeans") and "cuML is not installed" in report["gpu"]
    assert report["auto"] == "gpu"
