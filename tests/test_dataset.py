"""Reading 4D-STEM scans (gpu4d.open_dataset, Dataset.batches) and clustering them end to end.

Files are read lazily through RosettaSciIO/HyperSpy (``.npy`` is memory-mapped); the patterns
must equal what ``hyperspy.api.load`` returns, in native byte order, with the calibrations kept.
"""

from __future__ import annotations

import dask.array as da
import hyperspy.api as hs
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import gpu4d
from gpu4d.align import descan_shifts
from gpu4d.io.dataset import Axis

from .reference import preprocess_reference, shift_patterns


def _hs_load(path):
    return hs.load(str(path))


def _all_patterns(dataset) -> np.ndarray:
    """Every pattern of the dataset through read_patterns, as (ny, nx, qy, qx)."""
    return dataset.read_patterns(0, dataset.n_patterns).reshape(dataset.shape)


def _hs_axes(signal):
    """(scan_axes, detector_axes) of a 4D HyperSpy signal in gpu4d's (y, x) order."""
    nav = signal.axes_manager.navigation_axes
    sig = signal.axes_manager.signal_axes
    to_axis = lambda a: (a.size, float(a.scale), float(a.offset), a.units)  # noqa: E731
    return (to_axis(nav[1]), to_axis(nav[0])), (to_axis(sig[1]), to_axis(sig[0]))


def _gpu4d_axes(axes):
    return tuple((a.size, a.scale, a.offset, a.units) for a in axes)


def _calibrated_signal(data: np.ndarray):
    """A Signal2D (ny, nx | qy, qx) with distinct scale, offset, units and names on every axis."""
    signal = hs.signals.Signal2D(data)
    x, y = signal.axes_manager.navigation_axes
    kx, ky = signal.axes_manager.signal_axes
    for axis, name, scale, offset, units in (
        (y, "y", 1.5, 0.25, "nm"),
        (x, "x", 2.5, -1.0, "nm"),
        (ky, "ky", 0.1, -1.2, "1/nm"),
        (kx, "kx", 0.2, -2.4, "1/nm"),
    ):
        axis.name, axis.scale, axis.offset, axis.units = name, scale, offset, units
    return signal


EXPECTED_CALIBRATED_AXES = (
    (Axis("y", 4, 1.5, 0.25, "nm"), Axis("x", 6, 2.5, -1.0, "nm")),
    (Axis("ky", 24, 0.1, -1.2, "1/nm"), Axis("kx", 24, 0.2, -2.4, "1/nm")),
)


# -- real instrument files -----------------------------------------------------------------


def test_blockfile_shape_dtype_calibrations_and_values(blo_file):
    dataset = gpu4d.open_dataset(blo_file)
    assert dataset.shape == (3, 2, 144, 144)
    assert dataset.scan_shape == (3, 2) and dataset.detector_shape == (144, 144)
    assert dataset.dtype == np.uint8
    assert dataset.source == str(blo_file)

    y, x = dataset.scan_axes
    assert (y.scale, x.scale) == pytest.approx((12.8, 12.8))
    assert y.units == x.units == "nm"
    reference = _hs_load(blo_file)
    scan, detector = _hs_axes(reference)
    assert _gpu4d_axes(dataset.scan_axes) == scan
    assert _gpu4d_axes(dataset.detector_axes) == detector
    assert dataset.detector_axes[0].units != "px"  # the detector calibration is kept too

    patterns = _all_patterns(dataset)
    assert patterns.dtype == np.uint8
    np.testing.assert_array_equal(patterns, reference.data)


@pytest.mark.parametrize("scan_step, detector_scale", [(3.7, 0.02), (0.5, 1.0)])
def test_a_written_blockfile_reads_as_hyperspy_loads_it(tmp_path, scan_step, detector_scale):
    """gpu4d reads a .blo's shape and calibrations from its header (no lazy HyperSpy load): the
    same axes, sizes and patterns as HyperSpy's load of the file."""
    from gpu4d.synthetic import write_blo

    data = np.random.default_rng(3).integers(0, 255, (5, 7, 16, 16), dtype=np.uint8)
    path = tmp_path / "scan.blo"
    write_blo(path, data, scan_step_nm=scan_step, detector_scale=detector_scale)
    dataset = gpu4d.open_dataset(path)
    reference = _hs_load(path)
    scan, detector = _hs_axes(reference)
    assert _gpu4d_axes(dataset.scan_axes) == scan
    assert _gpu4d_axes(dataset.detector_axes) == detector
    assert [a.name for a in dataset.scan_axes + dataset.detector_axes] == [
        a.name for a in reference.axes_manager.navigation_axes[::-1] + reference.axes_manager.signal_axes[::-1]
    ]
    np.testing.assert_array_equal(_all_patterns(dataset), data)


def test_opening_a_blockfile_imports_neither_dask_nor_hyperspy(blo_file):
    """What the header holds is read without the ~1 s import of HyperSpy's lazy load."""
    import subprocess
    import sys

    code = (
        "import sys, gpu4d; d = gpu4d.open_dataset(sys.argv[1]); d.read_patterns(0, 2); "
        "print(sorted(m for m in ('dask', 'hyperspy.api') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(blo_file)], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_mib_6bit(mib_file):
    dataset = gpu4d.open_dataset(mib_file)
    assert dataset.shape == (2, 4, 256, 256)
    assert dataset.dtype == np.uint8
    assert isinstance(dataset.array, da.Array)
    reference = _hs_load(mib_file)
    patterns = _all_patterns(dataset)
    assert patterns.dtype == np.uint8
    assert patterns.max() > 0  # real diffraction, not a blank file
    np.testing.assert_array_equal(patterns, reference.data)


def test_big_endian_mib_comes_back_native(big_endian_mib_file):
    dataset = gpu4d.open_dataset(big_endian_mib_file)
    assert dataset.shape == (2, 4, 128, 256)
    assert np.dtype(dataset.array.dtype) == np.dtype(">u2")  # what rsciio hands over
    assert dataset.dtype == np.dtype("uint16") and dataset.dtype.isnative

    reference = _hs_load(big_endian_mib_file).data
    assert reference.dtype == np.dtype(">u2")
    patterns = _all_patterns(dataset)
    assert patterns.dtype == np.dtype("uint16") and patterns.dtype.isnative
    np.testing.assert_array_equal(patterns, reference)  # equal values, not equal bytes
    # the hot pixel is the one brightest pixel of every frame, at row qy - 40, column 52 (as
    # rsciio's own test finds it); a byte-swapped view would scramble the values
    for frame in patterns.reshape(-1, 128, 256):
        assert np.argwhere(frame == frame.max()).tolist() == [[128 - 40, 52]]


@pytest.mark.parametrize(
    ("name", "shape"),
    [("topspin_test_A.app5", (2, 5, 14, 12)), ("topspin_test_B.app5", (3, 7, 31, 26))],
)
def test_topspin_app5_picks_the_4d_signal(sample_file, name, shape):
    path = sample_file(f"topspin/{name}")
    loaded = _hs_load(path)
    assert isinstance(loaded, list) and len(loaded) > 1
    (four_d,) = [s for s in loaded if s.data.ndim == 4]

    dataset = gpu4d.open_dataset(path)
    assert dataset.shape == shape
    assert dataset.dtype == np.float32
    np.testing.assert_array_equal(_all_patterns(dataset), four_d.data)
    scan, detector = _hs_axes(four_d)
    assert _gpu4d_axes(dataset.scan_axes) == scan
    assert _gpu4d_axes(dataset.detector_axes) == detector
    assert dataset.scan_axes[0].units == "nm"


@pytest.mark.parametrize("extension", [".hspy", ".zspy"])
def test_hspy_and_zspy_keep_calibrations(tmp_path, two_phase, extension):
    path = tmp_path / f"scan{extension}"
    _calibrated_signal(two_phase.data).save(str(path))

    dataset = gpu4d.open_dataset(path)
    assert isinstance(dataset.array, da.Array), "files must be read lazily"
    assert dataset.shape == (4, 6, 24, 24)
    assert dataset.dtype == np.float32
    assert (dataset.scan_axes, dataset.detector_axes) == EXPECTED_CALIBRATED_AXES
    np.testing.assert_array_equal(_all_patterns(dataset), two_phase.data)


def test_npy_is_memory_mapped(tmp_path, two_phase):
    path = tmp_path / "scan.npy"
    np.save(path, two_phase.data)
    dataset = gpu4d.open_dataset(path)
    assert isinstance(dataset.array, np.memmap)
    assert dataset.shape == two_phase.data.shape
    assert dataset.scan_axes == (Axis("y", 4), Axis("x", 6))
    np.testing.assert_array_equal(_all_patterns(dataset), two_phase.data)


# -- in-memory objects ------------------------------------------------------------------------

CONTAINERS = {
    "numpy": lambda a: a,
    "numpy big-endian": lambda a: a.astype(">f4"),
    "dask": lambda a: da.from_array(a, chunks=(3, 4, 24, 24)),
    "signal": _calibrated_signal,
    "lazy signal": lambda a: _calibrated_signal(a).as_lazy(),
}


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_open_in_memory_objects(two_phase, container):
    data = CONTAINERS[container](two_phase.data)
    dataset = gpu4d.open_dataset(data)
    assert dataset.shape == (4, 6, 24, 24)
    patterns = _all_patterns(dataset)
    assert patterns.dtype == np.float32 and patterns.dtype.isnative
    np.testing.assert_array_equal(patterns, two_phase.data)
    if "signal" in container:
        assert (dataset.scan_axes, dataset.detector_axes) == EXPECTED_CALIBRATED_AXES
    else:
        assert dataset.scan_axes == (Axis("y", 4), Axis("x", 6))
    assert gpu4d.open_dataset(dataset) is dataset


@pytest.fixture(scope="module")
def numpy_clustering(make_scan):
    scan = make_scan()
    return scan, gpu4d.cluster(scan.data, 2, mask="auto", n_init=2)


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_cluster_in_memory_objects(numpy_clustering, container):
    scan, reference = numpy_clustering
    result = gpu4d.cluster(CONTAINERS[container](scan.data), 2, mask="auto", n_init=2)
    assert result.backend == "cpu"
    assert result.labels.shape == (4, 6)
    assert result.centroids.shape == (2, 24, 24)
    assert adjusted_rand_score(scan.truth.ravel(), result.labels.ravel()) == pytest.approx(1.0)
    # the container changes nothing: same labels and centroids as for the numpy array
    np.testing.assert_array_equal(result.labels, reference.labels)
    np.testing.assert_allclose(result.centroids, reference.centroids, rtol=1e-5, atol=1e-6)
    if "signal" in container:
        assert (result.scan_axes, result.detector_axes) == EXPECTED_CALIBRATED_AXES


# -- batches ----------------------------------------------------------------------------------


def _batch_sources(tmp_path, request):
    """(dataset, expected array) for each kind of source the batches are read from."""
    scan = request.getfixturevalue("make_scan")(ny=3, nx=5, q=8)  # 15 patterns: 7 does not divide it
    np.save(tmp_path / "scan.npy", scan.data)
    return {
        "numpy": lambda: (gpu4d.open_dataset(scan.data), scan.data),
        "dask, odd chunks": lambda: (
            gpu4d.open_dataset(da.from_array(scan.data, chunks=(2, 3, 8, 8))),
            scan.data,
        ),
        "npy memmap": lambda: (gpu4d.open_dataset(tmp_path / "scan.npy"), scan.data),
        "blo": lambda: (
            gpu4d.open_dataset(request.getfixturevalue("blo_file")),
            _hs_load(request.getfixturevalue("blo_file")).data,
        ),
        "big-endian mib": lambda: (
            gpu4d.open_dataset(request.getfixturevalue("big_endian_mib_file")),
            _hs_load(request.getfixturevalue("big_endian_mib_file")).data,
        ),
    }


@pytest.mark.parametrize("source", ["numpy", "dask, odd chunks", "npy memmap", "blo", "big-endian mib"])
@pytest.mark.parametrize("batch_size", [1, 7, "n"])
def test_batches_cover_the_whole_scan(tmp_path, request, source, batch_size):
    dataset, expected = _batch_sources(tmp_path, request)[source]()
    n = dataset.n_patterns
    size = n if batch_size == "n" else batch_size
    starts, batches = [], []
    for start, batch in dataset.batches(size):
        starts.append(start)
        assert batch.shape == (min(size, n - start), *dataset.detector_shape)
        assert batch.dtype.isnative
        batches.append(batch)
    assert starts == list(range(0, n, size))
    whole = np.concatenate(batches).reshape(dataset.shape)
    np.testing.assert_array_equal(whole, expected)


def test_read_patterns_across_scan_rows(blo_file):
    """A range that starts and ends mid-row returns exactly those patterns."""
    dataset = gpu4d.open_dataset(blo_file)
    flat = _hs_load(blo_file).data.reshape(6, 144, 144)
    np.testing.assert_array_equal(dataset.read_patterns(1, 4), flat[1:4])
    np.testing.assert_array_equal(dataset.read_patterns(5, 6), flat[5:6])


# -- end to end on real files -----------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["blo_file", "mib_file"])
def test_cluster_real_file_end_to_end(request, file_hash, fixture):
    path = request.getfixturevalue(fixture)
    before = file_hash(path)
    hdr = path.with_suffix(".hdr")
    hdr_before = file_hash(hdr) if hdr.exists() else None

    result = gpu4d.cluster(path, 2, mask="auto")  # the defaults: sqrt, "auto" alignment

    raw = _hs_load(path).data
    scan_shape, detector_shape = raw.shape[:2], raw.shape[2:]
    assert result.labels.shape == scan_shape
    assert result.centroids.shape == (2, *detector_shape)
    assert result.mean_patterns.shape == (2, *detector_shape)
    assert set(np.unique(result.labels)) <= {0, 1}
    np.testing.assert_array_equal(result.cluster_sizes, np.bincount(result.labels.ravel(), minlength=2))
    # the detector offset found (the .blo's camera reads a dark level) is subtracted first
    flat = np.maximum(raw.reshape(-1, *detector_shape).astype(np.float64) - result.mask.detector_offset, 0.0)
    # "auto" alignment: the shifts are the descan fitted to the measured centres, kept only when
    # they wander by half a pixel or more (the mib's beam does, by 1.5 px; the blo's does not)
    alignment = result.summary()["alignment"]
    assert result.parameters["align"] == "auto"
    shifts = None
    if alignment["auto"]["applied"]:
        shifts, _ = descan_shifts(result.centres.astype(np.float64), alignment["method"], alignment["reference"])
        assert np.ptp(shifts, axis=0).max() >= 0.5
        patterns = shift_patterns(flat, shifts)
    else:
        assert result.centres is None and alignment["auto"]["wander_px"] < 0.5
        patterns = flat.astype(np.float64)
    # the mean pattern of each cluster is the mean of its (aligned) raw patterns, and its
    # centroid the mean of its sqrt-transformed, max-normalized kept pixels
    features = preprocess_reference(flat, result.mask.masked, "sqrt", "max", shifts, result.parameters["blur_px"])
    for k in range(2):
        members = result.labels.ravel() == k
        if members.any():
            expected = patterns[members].mean(axis=0)
            np.testing.assert_allclose(result.mean_patterns[k], expected, rtol=1e-5, atol=1e-4)
            centroid = features[members].mean(axis=0)
            np.testing.assert_allclose(result.centroids[k][~result.mask.masked], centroid, rtol=1e-4, atol=1e-6)
    # masked pixels (the direct beam) carry nothing in the centroids
    assert result.mask.kind == "auto" and result.mask.masked.any()
    assert not result.centroids[:, result.mask.masked].any()
    assert result.source == str(path)

    assert file_hash(path) == before, "gpu4d must not modify its input file"
    if hdr_before is not None:
        assert file_hash(hdr) == hdr_before


@pytest.mark.parametrize("batch_size", [1, 4, 7, 13, 35])
def test_blockfile_batches_equal_the_written_scan(tmp_path, batch_size):
    """A .blo's patterns, in batches that start and end anywhere in a scan row, are the ones
    written; a file cut short after opening is reported, not read as zeros."""
    from gpu4d.synthetic import write_blo

    data = np.random.default_rng(4).integers(0, 256, (5, 7, 12, 12), dtype=np.uint8)
    path = tmp_path / "scan.blo"
    write_blo(path, data)
    dataset = gpu4d.open_dataset(path)
    assert dataset.shape == data.shape and dataset.dtype == np.uint8
    batches = list(dataset.batches(batch_size))
    assert [start for start, _ in batches] == list(range(0, 35, batch_size))
    got = np.concatenate([batch for _, batch in batches])
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, data.reshape(-1, 12, 12))
    np.testing.assert_array_equal(_hs_load(path).data, data)  # what RosettaSciIO reads, too
    path.write_bytes(path.read_bytes()[:-100])  # cut short after opening
    with pytest.raises(gpu4d.InputError, match=f"{path}: cannot read scan rows .* truncated or corrupt"):
        list(dataset.batches(batch_size))
