"""Files users bring: DECTRIS ARINA master files, scans without a recorded scan shape (--scan),
a .hdr given for its .mib, EMD/py4DSTEM .h5, and dead and hot detector pixels.

Every read is compared with an independent read of the same bytes (h5py, RosettaSciIO, numpy).
"""

from __future__ import annotations

import json
import re

import h5py
import hdf5plugin
import numpy as np
import pytest

import gpu4d
from gpu4d.bad_pixels import find_bad_pixels, pattern_statistics
from gpu4d.masks import detector_mask_for, find_beam, parse_mask
from gpu4d.synthetic import make_scan

ARINA = "arina/test_00_master.h5"
NINE_FRAMES = "quantumdetector/Single_9_Frame_CounterDepth_6_Rows_256.mib"
HOT_PIXEL = "quantumdetector/002_merlin_test_roi_sig256x128_nav4x2_hot_pixel_52x_39y.mib"
PY4DSTEM = "emd/py4DSTEM_size2x3x4x5.h5"


def _one_error_line(run) -> str:
    assert run.code == 2, (run.out, run.err)
    assert "Traceback" not in run.err
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run.err
    assert lines[0].startswith("gpu4d: error: ")
    return lines[0]


# -- DECTRIS ARINA ------------------------------------------------------------------------------


def test_arina_sample_reads_like_h5py(sample_file):
    master = sample_file(ARINA)
    with h5py.File(master.with_name("test_00_data_000001.h5")) as f:
        reference = f["entry/data/data"][()]
    with pytest.warns(gpu4d.errors.Gpu4dWarning, match="records no scan shape; reading its 16 frames as a square 4x4"):
        dataset = gpu4d.open_dataset(master)
    assert dataset.shape == (4, 4, 192, 192)
    assert dataset.dtype == reference.dtype
    np.testing.assert_array_equal(dataset.read_patterns(0, 16), reference)


def write_arina(folder, frames_per_file, shape=(6, 5), *, seed=0, name="scan"):
    """A DECTRIS-like master file linking bitshuffle/LZ4 data files; returns (master, frames)."""
    rng = np.random.default_rng(seed)
    chunks = [rng.poisson(3.0, (n, *shape)).astype(np.uint16) for n in frames_per_file]
    master = folder / f"{name}_master.h5"
    with h5py.File(master, "w") as f:
        f.create_group("entry/instrument/detector/detectorSpecific")
        det = f["entry/instrument/detector"]
        det["x_pixel_size"] = 75e-6
        det["detector_distance"] = 0.2
        det["detectorSpecific/photon_energy"] = 200e3
        mask = np.zeros(shape, np.uint32)
        mask[1, 2] = 1
        det["detectorSpecific/pixel_mask"] = mask
        data = f.create_group("entry/data")
        for i, chunk in enumerate(chunks, start=1):
            data_name = f"{name}_data_{i:06d}.h5"
            with h5py.File(folder / data_name, "w") as d:
                d.create_dataset("entry/data/data", data=chunk, chunks=(1, *shape), **hdf5plugin.Bitshuffle())
            data[f"data_{i:06d}"] = h5py.ExternalLink(data_name, "/entry/data/data")
    return master, np.concatenate(chunks)


def test_arina_batches_span_data_files(tmp_path):
    master, frames = write_arina(tmp_path, [5, 4, 3])
    dataset = gpu4d.open_dataset(master, scan_shape=(3, 4))
    assert dataset.shape == (3, 4, 6, 5)
    for start, stop in [(0, 12), (3, 7), (4, 5), (8, 12), (11, 12)]:
        np.testing.assert_array_equal(dataset.read_patterns(start, stop), frames[start:stop])
    # the reciprocal pixel size from the geometry: pixel / (camera length x wavelength)
    wavelength_nm = 1239.841984 / np.sqrt(200e3 * (200e3 + 2 * 510998.95))
    assert dataset.detector_axes[1].units == "1/nm"
    assert dataset.detector_axes[1].scale == pytest.approx(75e-6 / (0.2 * wavelength_nm), rel=1e-9)
    np.testing.assert_array_equal(dataset.metadata["detector_bad_pixels"], np.eye(1, 30, 7, dtype=bool).reshape(6, 5))


def test_arina_cluster_through_the_cli(run_cli, tmp_path):
    master, frames = write_arina(tmp_path, [8, 4])
    out = tmp_path / "out"
    run = run_cli("cluster", master, "-k", 2, "--scan", "3x4", "--mask", "none", "--align", "none",
                  "--out", out, "-q", "--no-figures")  # no alignment: the mean patterns are raw means
    assert run.code == 0, run.err
    assert "warning" not in run.err  # the scan shape was given
    labels = np.load(out / "labels.npy")
    assert labels.shape == (3, 4)
    means = np.load(out / "mean_patterns.npy")
    flat = labels.ravel()
    for label in range(2):
        np.testing.assert_allclose(means[label], frames[flat == label].mean(axis=0), rtol=1e-5)


def test_arina_without_a_square_frame_count_needs_scan(run_cli, tmp_path):
    master, _ = write_arina(tmp_path, [12])
    line = _one_error_line(run_cli("cluster", master, "-k", 2, "--out", tmp_path / "out", "-q"))
    assert f"{master}: holds 12 frames and records no scan shape" in line
    assert "--scan NYxNX" in line
    assert not (tmp_path / "out").exists()


def test_arina_data_file_points_to_its_master(run_cli, tmp_path):
    master, _ = write_arina(tmp_path, [4])
    data = tmp_path / "scan_data_000001.h5"
    line = _one_error_line(run_cli("cluster", data, "-k", 2, "--out", tmp_path / "out", "-q"))
    assert f"{data}: is an ARINA data file; give its master file {master.name} instead" in line


def test_arina_missing_data_file(run_cli, tmp_path):
    master, _ = write_arina(tmp_path, [4, 4])
    (tmp_path / "scan_data_000002.h5").unlink()
    line = _one_error_line(run_cli("cluster", master, "-k", 2, "--out", tmp_path / "out", "-q"))
    assert f"{master}: its data file scan_data_000002.h5 is missing" in line


# -- --scan: navigation that records no scan shape ----------------------------------------------


def test_scan_option_gives_a_1d_mib_its_shape(run_cli, sample_file, tmp_path):
    import hyperspy.api as hs

    path = sample_file(NINE_FRAMES)
    frames = np.asarray(hs.load(str(path)).data)  # (9, 256, 256), RosettaSciIO's own read
    dataset = gpu4d.open_dataset(path, scan_shape="3x3")
    assert dataset.shape == (3, 3, 256, 256)
    np.testing.assert_array_equal(dataset.read_patterns(0, 9), frames)
    np.testing.assert_array_equal(dataset.read_patterns(4, 7), frames[4:7])
    out = tmp_path / "out"
    run = run_cli("cluster", path, "-k", 2, "--scan", "3x3", "--out", out, "-q", "--no-figures")
    assert run.code == 0, run.err
    assert np.load(out / "labels.npy").shape == (3, 3)
    assert json.loads((out / "summary.json").read_text())["scan_shape"] == [3, 3]


def test_sweep_takes_scan_too(run_cli, sample_file, tmp_path):
    out = tmp_path / "sweep"
    run = run_cli("sweep", sample_file(NINE_FRAMES), "-k", "2:3", "--scan", "3x3", "--out", out, "-q", "--no-figures")
    assert run.code == 0, run.err
    assert np.load(out / "k03" / "labels.npy").shape == (3, 3)


@pytest.mark.parametrize(
    ("scan", "message"),
    [
        ("2x4", "scan shape 2x4 (--scan, scan_shape=) needs 8 patterns but {path} holds 9"),
        ("3by3", "--scan '3by3': expected NYxNX"),
        ("0x9", "--scan '0x9': both sizes should be >= 1"),
        ("-3x3", "--scan '-3x3': expected NYxNX"),
    ],
)
def test_bad_scan_shapes(run_cli, sample_file, tmp_path, scan, message):
    path = sample_file(NINE_FRAMES)
    line = _one_error_line(run_cli("cluster", path, "-k", 2, f"--scan={scan}", "--out", tmp_path / "o", "-q"))
    assert message.format(path=path) in line
    assert not (tmp_path / "o").exists()


def test_scan_shape_regrids_a_4d_array_in_scan_order():
    data = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    dataset = gpu4d.open_dataset(data, scan_shape=(3, 2))
    assert dataset.shape == (3, 2, 4, 4)
    np.testing.assert_array_equal(dataset.read_patterns(0, 6), data.reshape(6, 4, 4))
    np.testing.assert_array_equal(dataset.read_patterns(3, 5), data.reshape(6, 4, 4)[3:5])


def test_scan_shape_for_frames_through_cluster(make_scan):
    scan = make_scan(ny=4, nx=6)
    frames = scan.data.reshape(24, *scan.data.shape[2:])
    flat = gpu4d.cluster(frames, 2, mask="none", scan_shape=(4, 6), n_init=1)
    whole = gpu4d.cluster(scan.data, 2, mask="none", n_init=1)
    np.testing.assert_array_equal(flat.labels, whole.labels)


# -- .hdr and EMD -------------------------------------------------------------------------------


def test_hdr_path_opens_its_mib(run_cli, mib_file, tmp_path):
    from_mib = gpu4d.open_dataset(mib_file)
    from_hdr = gpu4d.open_dataset(mib_file.with_suffix(".hdr"))
    assert from_hdr.source == str(mib_file)
    np.testing.assert_array_equal(from_hdr.read_patterns(0, 8), from_mib.read_patterns(0, 8))
    run = run_cli("cluster", mib_file.with_suffix(".hdr"), "-k", 2, "--out", tmp_path / "o", "-q", "--no-figures")
    assert run.code == 0, run.err


def test_hdr_without_its_mib(run_cli, mib_file, tmp_path):
    hdr = tmp_path / "alone.hdr"
    hdr.write_bytes(mib_file.with_suffix(".hdr").read_bytes())
    line = _one_error_line(run_cli("cluster", hdr, "-k", 2, "--out", tmp_path / "o", "-q"))
    assert f"{hdr}: is the header of a Merlin acquisition, but its data file alone.mib is not beside it" in line


def test_py4dstem_h5_is_read_with_the_emd_reader(sample_file):
    path = sample_file(PY4DSTEM)
    with h5py.File(path) as f:
        reference = f["datacube_root/datacube/data"][()]
    dataset = gpu4d.open_dataset(path)  # no reader= needed
    assert dataset.shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(dataset.read_patterns(0, 6), reference.reshape(6, 4, 5))


def test_ambiguous_hdf5_asks_for_a_reader_and_lists_emd(run_cli, tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["some/data"] = np.zeros((2, 2, 4, 4))
    line = _one_error_line(run_cli("cluster", path, "-k", 2, "--out", tmp_path / "o", "-q"))
    assert str(path) in line
    assert "--reader" in line


def test_unknown_reader_lists_the_valid_ones_including_emd(run_cli, blo_file, tmp_path):
    line = _one_error_line(run_cli("cluster", blo_file, "-k", 2, "--reader", "nosuch", "--out", tmp_path / "o", "-q"))
    assert "reader 'nosuch' is not a reader gpu4d knows; choose one of: " in line
    for name in ("Blockfile", "EMD", "QuantumDetector", "Arina", "HSPY"):
        assert re.search(rf"\b{name}\b", line)


def test_reader_on_npy_is_refused(run_cli, tmp_path):
    path = tmp_path / "scan.npy"
    np.save(path, np.ones((2, 2, 8, 8), np.float32))
    for reader, message in (("nosuch", "reader 'nosuch' is not a reader gpu4d knows"),
                            ("hspy", "reader='HSPY' does not apply to .npy files")):
        line = _one_error_line(run_cli("cluster", path, "-k", 2, "--reader", reader, "--out", tmp_path / "o", "-q"))
        assert message in line


# -- dead and hot pixels ------------------------------------------------------------------------


def test_hot_pixel_of_the_merlin_sample_is_masked_before_the_beam_search(sample_file, run_cli, tmp_path):
    path = sample_file(HOT_PIXEL)
    dataset = gpu4d.open_dataset(path)
    raw = dataset.read_patterns(0, 8).astype(np.float64)
    # independent reference: the pixel that counts in every frame while its 8 neighbours never do
    lit = raw > 0
    neighbours_dark = np.ones_like(lit)
    padded = np.pad(raw, ((0, 0), (1, 1), (1, 1)))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                neighbours_dark &= padded[:, 1 + dy : 129 + dy, 1 + dx : 257 + dx] == 0
    always_isolated = np.argwhere((lit & neighbours_dark).all(axis=0))
    assert [88, 52] in always_isolated.tolist()  # the file's "x=52, y=39" (rows counted from the bottom)
    mask, mean = detector_mask_for(parse_mask("auto"), dataset)
    assert sorted(mask.bad_pixels["hot"]) == sorted(always_isolated.tolist())
    assert mask.masked[88, 52]
    # the beam search no longer lands on the hot pixel, as it does on the raw mean
    assert np.allclose(find_beam(raw.mean(axis=0))["centre"], (88, 52), atol=0.5)
    assert not np.allclose(mask.centre, (88, 52), atol=3)
    run = run_cli("cluster", path, "-k", 2, "--out", tmp_path / "o", "-q", "--no-figures")
    assert run.code == 0, run.err
    assert "hot pixel" in run.out and "(y=88, x=52)" in run.out
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert [88, 52] in summary["mask"]["bad_pixels"]["hot"]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "options",
    [{}, {"detector_shape": (48, 48)}, {"dose": 300.0}, {"dose": 1e6, "dtype": "float32"}],
    ids=["default", "small detector", "low dose", "high dose float"],
)
def test_no_bad_pixels_flagged_on_clean_synthetic_scans(seed, options):
    """The direct beam and the Bragg spots are never taken for hot pixels."""
    scan = make_scan(scan_shape=(12, 12), n_grains=3, seed=seed, **options)
    dataset = gpu4d.open_dataset(scan.data)
    bad = find_bad_pixels(dataset, pattern_statistics(dataset))
    assert bad.count == 0, bad.describe()


def test_planted_hot_and_dead_pixels_are_found_exactly():
    scan = make_scan(scan_shape=(12, 12), n_grains=3, seed=4)
    data = scan.data.copy()
    rng = np.random.default_rng(0)
    hot = [(5, 7), (100, 33)]
    dead = [(60, 90), (61, 90), (62, 90)]  # a short dead column
    for y, x in hot:
        data[:, :, y, x] = rng.integers(800, 1000, data.shape[:2])
    for y, x in dead:
        data[:, :, y, x] = 0
    dataset = gpu4d.open_dataset(data)
    bad = find_bad_pixels(dataset, pattern_statistics(dataset))
    assert sorted(map(tuple, bad.hot.tolist())) == sorted(hot)
    assert sorted(map(tuple, bad.dead.tolist())) == sorted(dead)
    # the beam is found where it is without them
    clean_mask, _ = detector_mask_for(parse_mask("auto"), gpu4d.open_dataset(scan.data))
    mask, _ = detector_mask_for(parse_mask("auto"), dataset)
    np.testing.assert_allclose(mask.centre, clean_mask.centre, atol=0.05)
    for y, x in hot + dead:
        assert mask.masked[y, x]
    assert mask.describe()["bad_pixels"]["n_hot"] == 2 and mask.describe()["bad_pixels"]["n_dead"] == 3


def test_explicit_masks_get_no_bad_pixels(make_scan):
    data = make_scan().data.copy()
    data[:, :, 3, 3] = 5000.0  # hot
    for mask in ("none", (11.5, 11.5, 3.0)):
        result = gpu4d.cluster(data, 2, mask=mask, n_init=1)
        assert result.mask.bad_pixels is None
        assert not result.mask.masked[3, 3]
    assert gpu4d.cluster(data, 2, mask="auto", n_init=1).mask.masked[3, 3]
