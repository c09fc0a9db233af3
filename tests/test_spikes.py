"""Transient spikes (cosmic rays, X-ray hits: a bright pixel in one frame only): found against the
frames beside them in the scan, replaced on every read, and the map they no longer break
(``gpu4d.spikes``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gpu4d
from gpu4d.engine.reading import read_checked
from gpu4d.io.dataset import open_dataset
from gpu4d.scores import adjusted_rand_index
from gpu4d.spikes import CheckedFrames, remove_spikes
from gpu4d.synthetic import make_scan


def reference(frames: np.ndarray, scan_shape) -> np.ndarray:
    """The rule in numpy float64, frame by frame: a pixel above 4x the largest value within one
    detector pixel of it in the (up to) four scan neighbours (floored at 0) plus 8x the frame's
    mean positive value reads the largest value of that pixel in those neighbours."""
    from scipy.ndimage import maximum_filter

    ny, nx = scan_shape
    out = frames.copy()
    for i in range(ny * nx):
        y, x = divmod(i, nx)
        neighbours = [frames[j] for j, ok in ((i - 1, x > 0), (i + 1, x < nx - 1), (i - nx, y > 0), (i + nx, y < ny - 1)) if ok]
        frame = frames[i].astype(np.float64)
        positive = frame[frame > 0]
        if positive.size == 0 or nx < 2:
            continue
        same = np.maximum(np.max(np.stack(neighbours), axis=0).astype(np.float64), 0.0)
        near = maximum_filter(same, size=3, mode="nearest")
        spikes = frame - 4 * near > 8 * positive.mean()
        out[i][spikes] = same[spikes].astype(frames.dtype)
    return out


def spiked(frames: np.ndarray, rng, share: float, value, size: int = 1) -> np.ndarray:
    """``frames`` (n, qy, qx) with a ``size`` x ``size`` spike of ``value`` in ``share`` of them."""
    out = frames.copy()
    for i in rng.choice(len(out), max(1, int(share * len(out))), replace=False):
        y, x = rng.integers(0, out.shape[1] - size, 2)
        out[i, y : y + size, x : x + size] = value
    return out


def read_all(frames, scan_shape, batch: int, checked=None) -> np.ndarray:
    dataset = open_dataset(frames.reshape(*scan_shape, *frames.shape[1:]))
    n = frames.shape[0]
    return np.concatenate([read_checked(dataset, s, min(s + batch, n), checked=checked) for s in range(0, n, batch)])


# ----------------------------------------------------------------------------- the rule
@pytest.mark.parametrize("dtype", ("uint8", "uint16", "uint32", "int16", "float32"))
def test_reading_replaces_spikes_as_the_numpy_reference_does(dtype):
    rng = np.random.default_rng(0)
    scan_shape = (7, 9)
    frames = rng.poisson(3.0, (63, 12, 12)).astype(dtype)
    frames = spiked(frames, rng, 0.3, 200)
    expected = reference(frames, scan_shape)
    assert (expected != frames).sum() >= 18  # the spikes, and nothing much else
    # batches that start and stop inside scan rows, and whole rows
    for batch in (5, 9, 63):
        np.testing.assert_array_equal(read_all(frames, scan_shape, batch), expected)


def test_a_sample_read_is_the_full_read_at_those_frames():
    rng = np.random.default_rng(1)
    frames = spiked(rng.poisson(2.0, (80, 10, 10)).astype(np.uint16), rng, 0.2, 500)
    dataset = open_dataset(frames.reshape(8, 10, 10, 10))
    full = read_checked(dataset, 0, 80)
    wanted = np.array([0, 9, 10, 33, 34, 79])
    np.testing.assert_array_equal(read_checked(dataset, 0, 80, wanted), full[wanted])
    checked = CheckedFrames(80)
    np.testing.assert_array_equal(read_checked(dataset, 20, 50, checked=checked), full[20:50])
    np.testing.assert_array_equal(read_checked(dataset, 20, 50, checked=checked), full[20:50])  # remembered
    assert (checked.state[20:50] >= 0).all() and (checked.state[:20] < 0).all()


def test_reading_never_writes_the_input_and_clean_batches_are_not_copied():
    rng = np.random.default_rng(2)
    frames = rng.poisson(2.0, (40, 8, 8)).astype(np.uint8)
    dirty = spiked(frames, rng, 0.1, 250)
    before = dirty.copy()
    out, found = remove_spikes(dirty, np.arange(40), slice(0, 40), (5, 8), lambda i: dirty[i])
    assert found >= 4
    np.testing.assert_array_equal(dirty, before)
    clean, none_found = remove_spikes(frames, np.arange(40), slice(0, 40), (5, 8), lambda i: frames[i])
    assert none_found == 0 and np.shares_memory(clean, frames)


def test_a_one_pixel_bragg_spot_shared_with_the_scan_neighbours_is_kept():
    """A spot can be a single detector pixel; probe positions side by side share it."""
    frames = np.random.default_rng(5).poisson(1.0, (30, 16, 16)).astype(np.uint16)  # margin ~13
    frames[:, 8, 8] = 400  # the spot, on one pixel, in every frame
    frames[12:15, 5, 11] = 300  # a spot of three patterns in one row only (a small grain)
    out, found = remove_spikes(frames, np.arange(30), slice(0, 30), (5, 6), lambda i: frames[i])
    assert found == 0
    np.testing.assert_array_equal(out, frames)


def test_a_one_pixel_spot_moved_by_a_pixel_between_probe_positions_is_kept():
    """Descan or a jittering beam moves a sharp spot from one pixel to the next."""
    frames = np.random.default_rng(7).poisson(1.0, (30, 16, 16)).astype(np.uint16)
    for i in range(30):
        y, x = divmod(i, 6)
        frames[i, 8, 6 + (y + x) % 2] = 400  # a checkerboard: never the pixel of any of its 4 neighbours
    out, found = remove_spikes(frames, np.arange(30), slice(0, 30), (5, 6), lambda i: frames[i])
    assert found == 0
    np.testing.assert_array_equal(out, frames)


def test_a_pattern_at_the_end_of_a_row_keeps_the_spots_it_shares_with_the_row_below():
    """Its one neighbour in the row is in another grain; the pattern below is in its own."""
    frames = np.random.default_rng(6).poisson(1.0, (30, 16, 16)).astype(np.uint16)  # margin ~13
    frames[[5, 11], 9, 2] = 300  # last pattern of rows 0 and 1 (nx = 6)
    out, found = remove_spikes(frames, np.arange(30), slice(0, 30), (5, 6), lambda i: frames[i])
    assert found == 0
    # the same spot in one pattern only is a spike, replaced by the brightest neighbour value
    frames[11, 9, 2] = 0
    out, found = remove_spikes(frames, np.arange(30), slice(0, 30), (5, 6), lambda i: frames[i])
    assert found == 1 and out[5, 9, 2] == max(frames[4, 9, 2], frames[11, 9, 2])


def test_the_margin_follows_the_detector_gain():
    """The same electrons at 30 counts each: no more pixels taken out than at 1 count each."""
    rng = np.random.default_rng(3)
    electrons = rng.poisson(0.3, (400, 16, 16)).astype(np.uint16)
    for gain in (1, 30):
        frames = electrons * np.uint16(gain)
        _, found = remove_spikes(frames, np.arange(400), slice(0, 400), (20, 20), lambda i: frames[i])
        assert found == 0, gain


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def spiked_scan():
    scan = make_scan((24, 24), (48, 48), n_grains=4, dose=2000, dtype="uint16", seed=5)
    rng = np.random.default_rng(6)
    flat = scan.data.reshape(-1, 48, 48)
    return scan, spiked(flat, rng, 0.3, 3000).reshape(scan.data.shape)


def test_spikes_in_a_third_of_the_frames_leave_the_map_of_the_clean_scan(spiked_scan):
    scan, data = spiked_scan
    k = scan.n_regions
    clean = gpu4d.cluster(scan.data, k)
    found = gpu4d.cluster(data, k)
    assert found.parameters["spikes"] is True
    assert adjusted_rand_index(found.labels, clean.labels) >= 0.99
    np.testing.assert_allclose(found.mean_patterns, clean.mean_patterns, atol=0.02 * clean.mean_patterns.max())
    # kept, the same spikes break the map (what replacing them prevents)
    kept = gpu4d.cluster(data, k, spikes=False)
    assert kept.parameters["spikes"] is False
    assert adjusted_rand_index(kept.labels, clean.labels) < 0.9


def test_classify_reads_spikes_as_the_model_did(spiked_scan, tmp_path):
    scan, data = spiked_scan
    k = scan.n_regions
    model = gpu4d.cluster(scan.data, k).save(tmp_path / "model")
    classified = gpu4d.classify(model, data)
    assert adjusted_rand_index(classified.labels, gpu4d.load_result(model).labels) >= 0.99
    kept_model = gpu4d.cluster(scan.data, k, spikes=False).save(tmp_path / "kept")
    kept = gpu4d.classify(kept_model, data)
    assert adjusted_rand_index(kept.labels, gpu4d.load_result(kept_model).labels) < 0.9


def test_live_classification_reads_spikes_as_classify_does(spiked_scan, tmp_path):
    """Frames arrive one by one; each is classified once its right and lower neighbours are in,
    so the labels and mean patterns are classify's."""
    from gpu4d.live import LiveClassifier

    scan, data = spiked_scan
    model = gpu4d.cluster(scan.data, scan.n_regions).save(tmp_path / "model")
    reference = gpu4d.classify(model, data)
    with LiveClassifier(gpu4d.load_result(model), data.shape[:2]) as live:
        for frame in data.reshape(-1, *data.shape[2:]):
            live.receive(frame)
            if live.frames_received % 7 == 0:
                live.process()
        result = live.finish()
    np.testing.assert_array_equal(result.labels, reference.labels)
    np.testing.assert_allclose(result.mean_patterns, reference.mean_patterns, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("value", ("yes", 1, None))
def test_a_bad_spikes_option_is_refused_by_name(value, spiked_scan):
    with pytest.raises(gpu4d.InputError, match="spikes="):
        gpu4d.cluster(spiked_scan[1], 3, spikes=value)


def test_cli_keeps_spikes_when_asked(spiked_scan, tmp_path, run_cli):
    scan, data = spiked_scan
    path = tmp_path / "spiked.npy"
    np.save(path, data)
    for extra, expected in (([], True), (["--keep-spikes"], False)):
        out = tmp_path / f"out{len(extra)}"
        run = run_cli("cluster", path, "-k", scan.n_regions, "--out", out, "--no-figures", "-q", *extra)
        assert run.code == 0, run.err
        assert json.loads((out / "summary.json").read_text())["parameters"]["spikes"] is expected

