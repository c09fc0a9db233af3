"""HyperSpy/pyxem out: ``to_signals()`` / ``to_pyxem()`` on the right axes with the scan's
calibrations, and the per-cluster mean / standard deviation / count datacube
(``gpu4d.cluster_stats``) against numpy float64, written as .hspy / .zspy and read back with
``hs.load``."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import gpu4d
from gpu4d.cluster_stats import cluster_statistics
from gpu4d.io.dataset import open_dataset
from gpu4d.errors import InputError, OutputError
from gpu4d.synthetic import make_scan

hs = pytest.importorskip("hyperspy.api")

SCAN_STEP_NM = 2.5
Q_SCALE = 0.05  # 1/nm per detector pixel
Q_OFFSET = -16 * Q_SCALE


def _signal(data):
    """``data`` (ny, nx, qy, qx) as a calibrated HyperSpy signal."""
    s = hs.signals.Signal2D(data)
    for axis, name in zip(s.axes_manager.navigation_axes, ("x", "y")):
        axis.name, axis.scale, axis.units = name, SCAN_STEP_NM, "nm"
    for axis, name in zip(s.axes_manager.signal_axes, ("kx", "ky")):
        axis.name, axis.scale, axis.offset, axis.units = name, Q_SCALE, Q_OFFSET, "1/nm"
    return s


@pytest.fixture(scope="module")
def scan():
    return make_scan((20, 24), (32, 32), n_grains=3, defect=False, seed=1)


@pytest.fixture(scope="module")
def result(scan):
    return gpu4d.cluster(_signal(scan.data), 3)


def _numpy_statistics(data, labels, k):
    x = np.asarray(data, np.float64).reshape(labels.size, -1)
    labels = labels.ravel()
    mean = np.stack([x[labels == i].mean(axis=0) for i in range(k)])
    std = np.stack([x[labels == i].std(axis=0) for i in range(k)])
    return mean.reshape(k, *data.shape[2:]), std.reshape(k, *data.shape[2:]), np.bincount(labels, minlength=k)


def _assert_calibrated(axes, names, scale, offset, units):
    assert [a.name for a in axes] == names
    assert [a.scale for a in axes] == pytest.approx([scale, scale])
    assert [a.offset for a in axes] == pytest.approx([offset, offset])
    assert [a.units for a in axes] == [units, units]


# --------------------------------------------------------------------------- statistics pass
@pytest.mark.parametrize("batch_size", [1, 37, 480])
@pytest.mark.parametrize("with_reference", [False, True])
def test_statistics_equal_numpy_float64(scan, batch_size, with_reference):
    mean, std, count = _numpy_statistics(scan.data, scan.labels, 3)
    stats = cluster_statistics(
        open_dataset(scan.data), scan.labels, 3, batch_size=batch_size,
        reference=mean.astype(np.float32) if with_reference else None,
    )
    np.testing.assert_array_equal(stats.count, count)
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(stats.std, std, rtol=1e-8, atol=1e-6)


@pytest.mark.parametrize("reference", [None, 1e8])
def test_a_small_spread_on_a_large_offset_stays_exact(reference):
    # sums of squares of 1e8 + noise lose the noise in float64 (std 2.8 for 0.01); deviations
    # from a reference near the mean (given, or each cluster's first pattern) do not
    rng = np.random.default_rng(0)
    data = 1e8 + rng.normal(0, 0.01, (6, 5, 4, 4))
    labels = rng.integers(0, 2, (6, 5))
    _, std, _ = _numpy_statistics(data, labels, 2)
    reference = None if reference is None else np.full((2, 4, 4), reference)
    stats = cluster_statistics(open_dataset(data), labels, 2, batch_size=7, reference=reference)
    np.testing.assert_allclose(stats.std, std, rtol=1e-6)


def test_an_empty_cluster_and_a_single_pattern():
    data = np.arange(2 * 3 * 2 * 2, dtype=np.uint16).reshape(2, 3, 2, 2)
    labels = np.array([[0, 0, 0], [0, 0, 2]])  # cluster 1 empty, cluster 2 one pattern
    stats = cluster_statistics(open_dataset(data), labels, 3)
    assert stats.count.tolist() == [5, 0, 1]
    assert not stats.mean[1].any() and not stats.std[1].any()
    np.testing.assert_array_equal(stats.mean[2], data[1, 2])
    assert not stats.std[2].any()


def test_bad_labels_are_refused(scan):
    dataset = open_dataset(scan.data)
    with pytest.raises(InputError, match="labels: 479 labels for the 480 patterns"):
        cluster_statistics(dataset, scan.labels.ravel()[:-1], 3)
    with pytest.raises(InputError, match=r"labels: values should be in 0\.\.1; found 0\.\.2"):
        cluster_statistics(dataset, scan.labels, 2)


def test_result_statistics_are_its_mean_patterns_also_after_alignment():
    # drift: the result's mean patterns are of shifted patterns; the statistics shift them the
    # same way (its descan fit redone from its centres), so their means agree
    drifted = make_scan((20, 24), (32, 32), n_grains=3, defect=False, seed=1, drift_px=2.5)
    result = gpu4d.cluster(drifted.data, 3)
    assert result.extra["alignment"]["auto"]["applied"]
    stats = result.cluster_statistics(drifted.data, batch_size=50)
    np.testing.assert_array_equal(stats.count, result.cluster_sizes)
    np.testing.assert_allclose(stats.mean, result.mean_patterns, rtol=1e-5, atol=1e-3)
    unshifted = _numpy_statistics(drifted.data, result.labels, 3)[0]
    assert np.abs(unshifted - result.mean_patterns).max() > 100  # the shift mattered


def test_result_statistics_need_the_scan_the_result_labels(result, scan):
    other = make_scan((10, 12), (32, 32), n_grains=3, defect=False, seed=1)
    with pytest.raises(InputError, match=r"scan shape \(10, 12\) is not the result's \(20, 24\)"):
        result.cluster_statistics(other.data)


# ---------------------------------------------------------------------------- the datacube
@pytest.mark.parametrize("suffix", [".hspy", ".zspy"])
def test_saved_datacube_loads_with_its_calibration_means_stds_and_counts(result, scan, tmp_path, suffix):
    path = result.save_cluster_patterns(tmp_path / f"clusters{suffix}", _signal(scan.data))
    loaded = hs.load(path)
    # the patterns as clustered: the detector offset gpu4d found (a flat background every pixel
    # holds in every frame of this small-detector scan) subtracted
    offset = loaded.metadata.gpu4d.detector_offset
    assert offset == result.mask.detector_offset
    mean, std, count = _numpy_statistics(np.maximum(scan.data.astype(np.float64) - offset, 0), result.labels, 3)
    assert loaded.data.shape == (3, 2, 32, 32) and loaded.data.dtype == np.float32
    np.testing.assert_allclose(loaded.inav[0].data, mean, rtol=1e-6)
    np.testing.assert_allclose(loaded.inav[1].data, std, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(loaded.inav[:, 2].data, np.stack([mean[2], std[2]]), rtol=1e-5, atol=1e-3)
    assert loaded.metadata.gpu4d.count == count.tolist()
    _assert_calibrated(loaded.axes_manager.signal_axes, ["kx", "ky"], Q_SCALE, Q_OFFSET, "1/nm")
    assert [a.name for a in loaded.axes_manager.navigation_axes] == ["statistic (0 mean, 1 std)", "cluster"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"clusters{suffix}"]  # no temporary left


def test_the_datacube_is_not_written_over_a_file_or_with_a_foreign_suffix(result, scan, tmp_path):
    path = tmp_path / "c.hspy"
    path.write_bytes(b"keep")
    with pytest.raises(OutputError, match="c.hspy: exists; pass overwrite=True"):
        result.save_cluster_patterns(path, scan.data)
    assert path.read_bytes() == b"keep"
    result.save_cluster_patterns(path, scan.data, overwrite=True)
    assert hs.load(path).data.shape == (3, 2, 32, 32)
    with pytest.raises(OutputError, match=r"c.npy: the file should end in .hspy or .zspy"):
        result.save_cluster_patterns(tmp_path / "c.npy", scan.data)


# ------------------------------------------------------------------------ to_signals / pyxem
def test_to_signals_put_maps_on_the_scan_axes_and_patterns_on_the_detector_axes(result):
    signals = result.to_signals()
    for name in ("labels", "confidence"):
        s = signals[name]
        assert s.axes_manager.navigation_dimension == 0
        np.testing.assert_array_equal(s.data, getattr(result, name))
        _assert_calibrated(s.axes_manager.signal_axes, ["x", "y"], SCAN_STEP_NM, 0.0, "nm")
    for name in ("centroids", "mean_patterns"):
        s = signals[name]
        assert [a.name for a in s.axes_manager.navigation_axes] == ["cluster"]
        assert s.axes_manager.navigation_shape == (3,)
        np.testing.assert_array_equal(s.data, getattr(result, name))
        _assert_calibrated(s.axes_manager.signal_axes, ["kx", "ky"], Q_SCALE, Q_OFFSET, "1/nm")


def test_saved_clusters_hspy_loads_with_the_calibrations(result, tmp_path):
    result.save(tmp_path / "out", figures=False)
    loaded = hs.load(tmp_path / "out" / "clusters.hspy")
    np.testing.assert_array_equal(loaded.data, result.centroids)
    _assert_calibrated(loaded.axes_manager.signal_axes, ["kx", "ky"], Q_SCALE, Q_OFFSET, "1/nm")
    labels = loaded.metadata.gpu4d.labels
    np.testing.assert_array_equal(labels.data, result.labels)
    _assert_calibrated(labels.axes_manager.signal_axes, ["x", "y"], SCAN_STEP_NM, 0.0, "nm")


def test_to_pyxem_gives_electron_diffraction_patterns_that_load_back_as_pyxem(result, tmp_path):
    pyxem = pytest.importorskip("pyxem")
    signals = result.to_pyxem()
    for name in ("centroids", "mean_patterns"):
        assert isinstance(signals[name], pyxem.signals.ElectronDiffraction2D)
        np.testing.assert_array_equal(signals[name].data, getattr(result, name))
        _assert_calibrated(signals[name].axes_manager.signal_axes, ["kx", "ky"], Q_SCALE, Q_OFFSET, "1/nm")
    signals["mean_patterns"].save(tmp_path / "means.hspy")
    loaded = hs.load(tmp_path / "means.hspy")
    assert isinstance(loaded, pyxem.signals.ElectronDiffraction2D)
    _assert_calibrated(loaded.axes_manager.signal_axes, ["kx", "ky"], Q_SCALE, Q_OFFSET, "1/nm")


def test_to_pyxem_without_pyxem_says_how_to_get_it(result, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyxem", None)  # import pyxem raises ImportError
    with pytest.raises(ImportError, match="needs pyxem, which is not installed: pip install pyxem"):
        result.to_pyxem()
