"""HyperSpy/pyxem in: a HyperSpy Signal2D or a pyxem Diffraction2D / ElectronDiffraction2D, lazy
or not, goes straight into ``cluster``, ``sweep`` and ``classify``: the same labels as the numpy
array, the signal's calibrations kept. pyxem's cases are skipped where pyxem is not installed
(it is in the ``test`` extra)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import gpu4d
from gpu4d.io.dataset import Axis
from gpu4d.errors import Gpu4dWarning, InputError
from gpu4d.synthetic import make_scan

hs = pytest.importorskip("hyperspy.api")

DETECTOR = (32, 32)
SCAN_STEP_NM = (1.5, 2.5)  # (y, x)
Q = 0.04  # 1/nm per detector pixel
EXPECTED_DETECTOR_AXES = (Axis("ky", 32, Q, -16 * Q, "1/nm"), Axis("kx", 32, Q, -16 * Q, "1/nm"))


def _pyxem():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyxem 0.21 warns about HyperSpy names it imports
        return pytest.importorskip("pyxem")


def _calibrated(signal, q: float = Q):
    x, y = signal.axes_manager.navigation_axes
    for axis, name, scale in ((y, "y", SCAN_STEP_NM[0]), (x, "x", SCAN_STEP_NM[1])):
        axis.name, axis.scale, axis.offset, axis.units = name, scale, 0.5, "nm"
    for axis, name in zip(signal.axes_manager.signal_axes, ("kx", "ky")):
        axis.name, axis.scale, axis.offset, axis.units = name, q, -16 * q, "1/nm"
    return signal


def _lazy_pyxem(data, q: float = Q):
    """A lazy ElectronDiffraction2D whose dask chunks are 5 x 7 scan positions (batches cut
    through them)."""
    import dask.array as da

    pyxem = _pyxem()
    return _calibrated(pyxem.signals.LazyElectronDiffraction2D(da.from_array(data, chunks=(5, 7, *DETECTOR))), q)


CONTAINERS = {
    "Signal2D": lambda d: _calibrated(hs.signals.Signal2D(d)),
    "LazySignal2D": lambda d: _calibrated(hs.signals.Signal2D(d)).as_lazy(),
    "Diffraction2D": lambda d: _calibrated(_pyxem().signals.Diffraction2D(d)),
    "ElectronDiffraction2D": lambda d: _calibrated(_pyxem().signals.ElectronDiffraction2D(d)),
    "LazyElectronDiffraction2D": _lazy_pyxem,
}


def _expected_scan_axes(shape):
    return (Axis("y", shape[0], SCAN_STEP_NM[0], 0.5, "nm"), Axis("x", shape[1], SCAN_STEP_NM[1], 0.5, "nm"))


@pytest.fixture(scope="module")
def scans():
    """Two scans of the same three grains, other layouts and sizes (as in test_model)."""
    first = make_scan((20, 24), DETECTOR, n_grains=3, defect=False, seed=1)
    second = make_scan((14, 18), DETECTOR, n_grains=3, defect=False, seed=1)
    return first, second


@pytest.fixture(scope="module")
def numpy_result(scans):
    return gpu4d.cluster(scans[0].data, 3)


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_cluster_a_signal_keeps_its_calibrations(scans, numpy_result, container):
    signal = CONTAINERS[container](scans[0].data)
    result = gpu4d.cluster(signal, 3)
    np.testing.assert_array_equal(result.labels, numpy_result.labels)  # the container changes nothing
    assert adjusted_rand_score(scans[0].labels.ravel(), result.labels.ravel()) >= 0.95
    assert result.scan_axes == _expected_scan_axes((20, 24))
    assert result.detector_axes == EXPECTED_DETECTOR_AXES
    assert result.source == f"<HyperSpy {type(signal).__name__}>"
    labels = result.to_signals()["labels"]
    assert [(a.name, a.scale, a.offset, a.units) for a in labels.axes_manager.signal_axes] == [
        (a.name, a.scale, a.offset, a.units) for a in signal.axes_manager.navigation_axes
    ]


def test_sweep_a_lazy_pyxem_signal(scans):
    signal = _lazy_pyxem(scans[0].data)
    swept = gpu4d.sweep(signal, [2, 3])
    reference = gpu4d.sweep(scans[0].data, [2, 3])
    for k in (2, 3):
        np.testing.assert_array_equal(swept.results[k].labels, reference.results[k].labels)
        assert swept.results[k].scan_axes == _expected_scan_axes((20, 24))
        assert swept.results[k].detector_axes == EXPECTED_DETECTOR_AXES
    assert swept.suggested_k == reference.suggested_k


def test_classify_a_lazy_pyxem_signal_with_a_model_of_another_signal(scans):
    first, second = scans
    model = gpu4d.cluster(CONTAINERS["ElectronDiffraction2D"](first.data), 3)
    result = gpu4d.classify(model, _lazy_pyxem(second.data))
    assert adjusted_rand_score(second.labels.ravel(), result.labels.ravel()) >= 0.95
    assert result.scan_axes == _expected_scan_axes((14, 18))
    assert result.detector_axes == EXPECTED_DETECTOR_AXES
    # the same scan as a numpy array, classified by the same model: the same labels
    np.testing.assert_array_equal(gpu4d.classify(model, second.data).labels, result.labels)


def test_classify_refuses_a_signal_on_another_detector_scale(scans):
    first, second = scans
    model = gpu4d.cluster(CONTAINERS["Signal2D"](first.data), 3)
    other = _calibrated(hs.signals.Signal2D(second.data), q=2 * Q)
    with pytest.raises(InputError, match="0.04") as caught:
        gpu4d.classify(model, other)
    assert "0.08" in str(caught.value)


def test_a_non_uniform_scan_axis_is_read_in_pixels_with_a_warning(scans, numpy_result):
    signal = CONTAINERS["Signal2D"](scans[0].data)
    signal.axes_manager.navigation_axes[0].convert_to_non_uniform_axis()
    with pytest.warns(Gpu4dWarning, match="HyperSpy axis 'x' is non-uniform"):
        result = gpu4d.cluster(signal, 3)
    np.testing.assert_array_equal(result.labels, numpy_result.labels)
    assert result.scan_axes == (Axis("y", 20, SCAN_STEP_NM[0], 0.5, "nm"), Axis("x", 24))
