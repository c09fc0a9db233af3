"""Real-GPU tests: CuPy transfers and streams, the CUDA kernels on a device, cuML and the CuPy
KMeans, each path against the CPU backend.

Skipped unless ``cupy.cuda.is_available()`` and numba-cuda imports (see ``gpu4d info``); tests
that need cuML skip with that reason when it is absent. Run on a GPU machine with
``python -m pytest -m gpu tests/test_gpu.py`` (``benchmarks/gpu_check.sh`` does).
Clusterings are compared up to the label permutation: cuML numbers clusters its own way.
"""

import importlib.util

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

import gpu4d
from gpu4d.backend import cuda_simulator_enabled, gpu_problem
from gpu4d.synthetic import make_scan

from .test_pipeline import spot_scan

PROBLEM = "the CUDA simulator is on" if cuda_simulator_enabled() else gpu_problem()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(PROBLEM is not None, reason=f"needs a usable CUDA GPU: {PROBLEM}"),
]
needs_cuml = pytest.mark.skipif(importlib.util.find_spec("cuml") is None, reason="cuML is not installed")


def ari(a, b) -> float:
    return adjusted_rand_score(np.ravel(a), np.ravel(b))


def permutation(reference_labels, labels, k: int) -> np.ndarray:
    """``order`` such that cluster ``order[j]`` of ``labels`` is cluster j of the reference."""
    overlap = np.zeros((k, k))
    np.add.at(overlap, (np.ravel(reference_labels), np.ravel(labels)), 1)
    _, order = linear_sum_assignment(-overlap)
    return order


def assert_same_clustering(cpu, gpu, k, *, rtol=1e-3, atol=1e-4):
    """Labels agree up to the permutation; centroids and mean patterns after matching them."""
    assert ari(cpu.labels, gpu.labels) >= 0.99
    order = permutation(cpu.labels, gpu.labels, k)
    np.testing.assert_allclose(gpu.centroids[order], cpu.centroids, rtol=rtol, atol=atol)
    np.testing.assert_allclose(gpu.mean_patterns[order], cpu.mean_patterns, rtol=rtol, atol=atol)
    np.testing.assert_array_equal(gpu.cluster_sizes[order], cpu.cluster_sizes)


@pytest.fixture
def cupy_kmeans(monkeypatch):
    """The GPU backend as on a machine without cuML (CuPy KMeans), even where cuML is installed."""
    monkeypatch.setenv("GPU4D_GPU_KMEANS", "xp")


# -- gpu4d.cluster ------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 7, None])
def test_cluster_equals_cpu(batch_size):
    data, truth = spot_scan(seed=0, scan=(24, 20), detector=(33, 31))
    kwargs = dict(mask="auto", transform="sqrt", random_state=0, batch_size=batch_size)
    cpu = gpu4d.cluster(data, 3, backend="cpu", **kwargs)
    gpu = gpu4d.cluster(data, 3, backend="gpu", **kwargs)
    assert gpu.backend == "gpu" and "simulator" not in gpu.backend_description
    assert ari(truth, gpu.labels) >= 0.99
    assert_same_clustering(cpu, gpu, 3)
    assert gpu.inertia == pytest.approx(cpu.inertia, rel=1e-3)


def test_cluster_with_cupy_kmeans_equals_cpu(cupy_kmeans):
    data, truth = spot_scan(seed=4, scan=(20, 21), detector=(29, 27), n_regions=4)
    cpu = gpu4d.cluster(data, 4, backend="cpu", mask="auto", random_state=0)
    gpu = gpu4d.cluster(data, 4, backend="gpu", mask="auto", random_state=0)
    assert "CuPy KMeans" in gpu.backend_description
    assert ari(truth, gpu.labels) >= 0.99
    assert_same_clustering(cpu, gpu, 4)


@needs_cuml
def test_cluster_with_cuml_from_init_and_tol_zero():
    """tol=0 (live's refinement) must reach cuVS as a positive tolerance."""
    data, _ = spot_scan(seed=5, scan=(16, 18), detector=(25, 23))
    cpu = gpu4d.cluster(data, 3, backend="cpu", mask="auto", tol=0.0)
    gpu = gpu4d.cluster(data, 3, backend="gpu", mask="auto", tol=0.0, init=cpu.centroids)
    assert "cuML" in gpu.backend_description
    np.testing.assert_array_equal(gpu.labels, cpu.labels)  # same start: same numbering


# -- gpu4d.sweep --------------------------------------------------------------------------------


@pytest.mark.parametrize("exact", [False, True])
def test_sweep_every_k_equals_cpu(exact):
    data, _ = spot_scan(seed=3, scan=(22, 24), detector=(27, 25), n_regions=4)
    kwargs = dict(ks=range(2, 7), mask="auto", random_state=0, exact=exact)
    cpu = gpu4d.sweep(data, backend="cpu", **kwargs)
    gpu = gpu4d.sweep(data, backend="gpu", **kwargs)
    assert gpu.ks == cpu.ks == [2, 3, 4, 5, 6]
    for k in cpu.ks:
        assert ari(cpu.labels[k], gpu.labels[k]) >= 0.99, k
        order = permutation(cpu.labels[k], gpu.labels[k], k)
        np.testing.assert_allclose(gpu[k].centroids[order], cpu[k].centroids, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(gpu[k].mean_patterns[order], cpu[k].mean_patterns, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(gpu.scores["inertia"], cpu.scores["inertia"], rtol=1e-3)
    assert gpu.suggested_k == cpu.suggested_k


# -- gpu4d live ---------------------------------------------------------------------------------


@pytest.mark.parametrize("align", [None, "com"])
def test_live_from_an_iterable_equals_cpu(align):
    from gpu4d.live import LiveRun

    scan = make_scan(scan_shape=(20, 20), detector_shape=(64, 64), seed=3, dtype="uint16",
                     drift_px=1.0 if align else 0.0)
    frames = scan.data.reshape(-1, 64, 64)
    outcomes = {}
    for backend in ("cpu", "gpu"):
        run = LiveRun(iter(np.array_split(frames, 25)), scan.n_regions, (20, 20), figures=False,
                      init_frames=128, batch_size=64, backend=backend, align=align, random_state=0)
        outcomes[backend] = run.run()
    cpu, gpu = outcomes["cpu"], outcomes["gpu"]
    assert gpu.status == "complete" and gpu.exit_code == 0, gpu.message
    assert gpu.result.extra["live"]["refined"]  # the final Lloyd refinement ran on the GPU
    assert ari(scan.labels, gpu.result.labels) >= 0.9
    assert ari(cpu.result.labels, gpu.result.labels) >= 0.99


# -- alignment ----------------------------------------------------------------------------------


@pytest.mark.parametrize("align", ["xcorr", "fit", "com"])
def test_aligned_cluster_equals_cpu(align):
    scan = make_scan(scan_shape=(20, 22), detector_shape=(64, 64), n_grains=3, drift_px=1.5, seed=7)
    kwargs = dict(mask="auto", align=align, random_state=0, batch_size=50)
    cpu = gpu4d.cluster(scan.data, scan.n_regions, backend="cpu", **kwargs)
    gpu = gpu4d.cluster(scan.data, scan.n_regions, backend="gpu", **kwargs)
    np.testing.assert_allclose(gpu.centres, cpu.centres, atol=1e-2)  # pixels; FFTs differ
    assert ari(cpu.labels, gpu.labels) >= 0.99


# -- kernels and streams on the device ----------------------------------------------------------


def test_device_kernels_equal_cpu_kernels():
    import cupy

    from gpu4d.kernels.label_sums import launch_label_sums_cpu
    from gpu4d.kernels.label_sums_cuda import launch_label_sums_cuda
    from gpu4d.kernels.preprocess import launch_preprocess_cpu
    from gpu4d.kernels.preprocess_cuda import launch_preprocess_cuda

    rng = np.random.default_rng(1)
    raw = rng.poisson(4, (257, 37, 29)).astype(np.uint16)
    ys, xs = (a.astype(np.int32).ravel() for a in np.indices((37, 29)))
    shifts = rng.uniform(-2, 2, (257, 2)).astype(np.float32)
    for transform, norm, use in ((1, 2, shifts), (2, 1, None), (0, 3, shifts)):
        cpu = np.empty((257, ys.size), np.float32)
        launch_preprocess_cpu(raw, use, ys, xs, transform, norm, cpu)
        out = cupy.empty_like(cupy.asarray(cpu))
        device_shifts = None if use is None else cupy.asarray(use)
        launch_preprocess_cuda(cupy.asarray(raw), device_shifts, cupy.asarray(ys), cupy.asarray(xs),
                               transform, norm, out)
        np.testing.assert_allclose(cupy.asnumpy(out), cpu, rtol=1e-5, atol=1e-6)

    rows = rng.integers(0, 255, (1001, 333)).astype(np.uint8)
    labels = np.repeat(rng.integers(0, 7, 1001 // 5 + 1), 5)[:1001, None].astype(np.int32)
    cpu_sums, cpu_squares = np.zeros((7, 333)), np.zeros(333)
    launch_label_sums_cpu(rows, labels, cpu_sums, cpu_squares)
    sums, squares = cupy.zeros((7, 333)), cupy.zeros(333)
    launch_label_sums_cuda(cupy.asarray(rows), cupy.asarray(labels), sums, squares)
    np.testing.assert_allclose(cupy.asnumpy(sums), cpu_sums, rtol=1e-12)
    np.testing.assert_allclose(cupy.asnumpy(squares), cpu_squares, rtol=1e-12)


def test_kernels_refuse_host_arrays():
    import cupy

    from gpu4d.kernels.label_sums_cuda import launch_label_sums_cuda

    with pytest.raises(TypeError, match="host"):
        launch_label_sums_cuda(np.ones((3, 4), np.float32), cupy.zeros((3, 1), np.int32), cupy.zeros((1, 4)))


def test_launches_do_not_synchronize_their_arguments(monkeypatch):
    """numba would synchronize the stream of every CuPy argument before each launch."""
    import cupy
    from numba.cuda.cudadrv import driver

    from gpu4d.backend import get_backend

    backend = get_backend("gpu")
    calls = []
    original = driver.Stream.synchronize
    monkeypatch.setattr(driver.Stream, "synchronize", lambda self: calls.append(self) or original(self))
    raw = np.random.default_rng(0).integers(0, 9, (64, 20, 20)).astype(np.uint8)
    ys, xs = (backend.to_device(a.astype(np.int32).ravel()) for a in np.indices((20, 20)))
    out = backend.xp.empty((64, 400), np.float32)
    for start, batch in backend.device_batches([(0, raw[:32]), (32, raw[32:])]):
        backend.preprocess(batch, None, ys, xs, 0, 1, out[start : start + 32])
    assert calls == []
    expected = raw.reshape(64, -1).astype(np.float32)
    expected /= np.maximum(expected.max(axis=1, keepdims=True), 1)
    np.testing.assert_allclose(cupy.asnumpy(out), expected, rtol=1e-6)


def test_assign_and_sum_is_read_after_its_atomics():
    """The Lloyd step's sums are zeroed, filled and read on one stream (issue 17, item 1)."""
    from gpu4d.backend import get_backend
    from gpu4d.kernels.lloyd import assign_and_sum_cpu

    backend = get_backend("gpu")
    xp = backend.xp
    rng = np.random.default_rng(2)
    z = rng.normal(size=(200_000, 16)).astype(np.float32)
    centres = rng.normal(size=(12, 16)).astype(np.float32)
    dots, norms = z @ centres.T, np.einsum("ij,ij->i", centres, centres)
    labels, sums, counts = assign_and_sum_cpu(dots, norms, z)
    for _ in range(5):
        got = backend.assign_and_sum(xp.asarray(dots), xp.asarray(norms), xp.asarray(z))
        total = got[1].sum(axis=1)  # read at once, on the current stream
        np.testing.assert_array_equal(backend.to_host(got[0]), labels)
        np.testing.assert_allclose(backend.to_host(total), sums.sum(axis=1), rtol=1e-9, atol=1e-6)
        np.testing.assert_array_equal(backend.to_host(got[2]), counts)


def test_stream_batches_delivers_every_batch_in_order():
    from gpu4d.backend import get_backend

    backend = get_backend("gpu")
    host = [(i * 5, np.full((5, 4, 3), i, np.uint8)) for i in range(7)]
    seen = [(start, int(batch[0, 0, 0])) for start, batch in backend.device_batches(iter(host))]
    assert seen == [(i * 5, i) for i in range(7)]


@pytest.mark.skipif(importlib.util.find_spec("dask_cuda") is None, reason="dask-cuda is not installed")
def test_dask_cuda_workers_give_the_inline_gpu_result(tmp_path):
    """One dask-cuda worker per GPU, the GPU backend on each: the inline GPU run's clustering (the
    client fits the regions on its CPU, the inline run on the GPU: up to float32 rounding)."""
    from dask_cuda import LocalCUDACluster
    from distributed import Client

    path = tmp_path / "scan.npy"
    np.save(path, make_scan((30, 34), (48, 48), dtype="uint16", seed=3).data)
    inline = gpu4d.sweep(str(path), "2:5", backend="gpu", batch_size=128)
    with LocalCUDACluster() as cluster, Client(cluster) as client:
        on_dask = gpu4d.sweep(str(path), "2:5", backend="gpu", batch_size=128, scheduler=client)
    for k in inline.ks:
        assert ari(on_dask[k].labels, inline[k].labels) >= 0.99
        assert on_dask[k].inertia == pytest.approx(inline[k].inertia, rel=1e-3)
    execution = on_dask.parameters["execution"]
    assert execution["worker_backend"] == "gpu" and execution["workers"] >= 1
