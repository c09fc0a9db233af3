"""The detector offset (a dark level every pixel reads in every frame): found, subtracted on
every read, recorded, and the map it restores (``gpu4d.detector_offset``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gpu4d
from gpu4d.detector_offset import find_offset, parse_offset, subtract_offset
from gpu4d.errors import InputError
from gpu4d.scores import adjusted_rand_index
from gpu4d.synthetic import make_scan


def frames_minimum_maximum(frames):
    return frames.min(axis=0), frames.max(axis=0)


@pytest.fixture(scope="module")
def counting_scan():
    """Poisson counts, uint16, 5 regions, the detector's own zeros."""
    return make_scan((24, 24), (48, 48), n_grains=4, dose=3000, dtype="uint16", seed=3)


# ----------------------------------------------------------------------------- the rule
def test_counting_frames_have_no_offset():
    frames = np.random.default_rng(0).poisson(2.0, (500, 32, 32)).astype(np.uint16)
    assert find_offset(*frames_minimum_maximum(frames)) == 0.0


def test_a_pedestal_under_poisson_counts_is_found_exactly():
    frames = np.random.default_rng(1).poisson(2.0, (500, 32, 32)).astype(np.uint16) + 100
    assert find_offset(*frames_minimum_maximum(frames)) == 100.0


def test_read_noise_leaves_at_most_a_few_noise_widths_of_the_pedestal():
    rng = np.random.default_rng(2)
    frames = (1000 + 30 * rng.poisson(0.5, (500, 32, 32)) + rng.normal(0, 10, (500, 32, 32))).astype(np.float32)
    offset = find_offset(*frames_minimum_maximum(frames))
    assert 1000 - 5 * 10 <= offset < 1000, offset


def test_dead_pixels_do_not_pull_the_offset_down():
    frames = np.random.default_rng(3).poisson(1.0, (300, 32, 32)).astype(np.uint16) + 50
    frames[:, :, :4] = 0  # an eighth of the detector never reads anything
    assert find_offset(*frames_minimum_maximum(frames)) == 50.0


def test_dark_subtracted_data_around_zero_give_no_offset():
    frames = np.random.default_rng(4).normal(0.0, 3.0, (300, 16, 16)).astype(np.float32)
    assert find_offset(*frames_minimum_maximum(frames)) == 0.0


@pytest.mark.parametrize("dtype", ("uint8", "uint16", "int16"))
def test_subtracting_stops_at_zero_and_never_writes_the_input(dtype):
    patterns = np.array([[[0, 3, 7, 120]]], dtype=dtype)
    before = patterns.copy()
    out = subtract_offset(patterns, 5.0)
    assert out.dtype == patterns.dtype
    np.testing.assert_array_equal(out, np.array([[[0, 0, 2, 115]]], dtype=dtype))
    np.testing.assert_array_equal(patterns, before)


@pytest.mark.parametrize("dtype", ("uint8", "uint16", "uint32", "int32"))
def test_subtracting_equals_numpy_on_a_strided_batch(dtype):
    batch = np.random.default_rng(5).integers(0, 250, (40, 33, 30)).astype(dtype)[:, ::2, 1:]
    out = subtract_offset(batch, 17.0)
    np.testing.assert_array_equal(out, np.maximum(batch.astype(np.int64) - 17, 0))
    assert out.dtype == batch.dtype


def test_subtracting_from_floats_keeps_their_sign():
    out = subtract_offset(np.array([1.5, 10.0], np.float32), 2.0)
    np.testing.assert_allclose(out, [-0.5, 8.0])  # the transforms count negatives as 0


@pytest.mark.parametrize(("value", "expected"), (("auto", "auto"), ("none", 0.0), (None, 0.0), ("12.5", 12.5), (7, 7.0)))
def test_offset_option_values(value, expected):
    assert parse_offset(value) == expected


@pytest.mark.parametrize("value", (-1, "x", float("nan"), True, "-3"))
def test_bad_offset_option_is_refused_by_name(value, counting_scan):
    with pytest.raises(InputError, match="offset"):
        gpu4d.cluster(counting_scan.data, 3, offset=value)


# ----------------------------------------------------------------------------- end to end
def test_a_pedestal_gives_the_map_of_the_scan_without_it(counting_scan):
    k = counting_scan.n_regions
    plain = gpu4d.cluster(counting_scan.data, k)
    assert plain.mask.detector_offset == 0.0
    with_pedestal = counting_scan.data + np.uint16(100)
    found = gpu4d.cluster(with_pedestal, k)
    # the pedestal is found to the count, so the patterns clustered are the very same
    assert found.mask.detector_offset == 100.0
    np.testing.assert_array_equal(found.labels, plain.labels)
    np.testing.assert_allclose(found.mean_patterns, plain.mean_patterns, rtol=1e-6, atol=1e-6)
    assert found.parameters["offset"] == "auto"
    # left in, the pedestal changes the map (what the default prevents)
    kept = gpu4d.cluster(with_pedestal, k, offset="none")
    assert kept.mask.detector_offset == 0.0
    assert adjusted_rand_index(kept.labels, plain.labels) < 0.99


def test_sweep_suggests_the_same_k_with_a_pedestal(counting_scan):
    plain = gpu4d.sweep(counting_scan.data, "2:8")
    found = gpu4d.sweep(counting_scan.data + np.uint16(300), "2:8")
    assert found.suggested_k == plain.suggested_k
    for k in found.ks:
        np.testing.assert_array_equal(found[k].labels, plain[k].labels)


def test_classify_finds_the_new_scans_own_offset(counting_scan, tmp_path):
    k = counting_scan.n_regions
    model = gpu4d.cluster(counting_scan.data + np.uint16(100), k)
    folder = model.save(tmp_path / "model")
    classified = gpu4d.classify(folder, counting_scan.data + np.uint16(140))
    assert classified.mask.detector_offset == 140.0
    np.testing.assert_array_equal(classified.labels, model.labels)


def test_an_aligned_classification_reads_the_scan_as_without_its_pedestal(tmp_path):
    """With descan, classify measures the beam in the new scan (its mean pattern, then every
    pattern): with the offset found there, a model and a scan that both carry a pedestal give
    the labels, centres and mean patterns of the same model and scan without one."""
    from .helpers import same_phase_scans

    first, second = same_phase_scans(2.5)
    plain = gpu4d.cluster(first.data, first.n_regions)
    assert plain.extra["alignment"]["auto"]["applied"] and plain.mask.detector_offset == 0
    with_pedestal = gpu4d.cluster(first.data + np.uint16(100), first.n_regions)
    expected = gpu4d.classify(plain, second.data)
    found = gpu4d.classify(with_pedestal, second.data + np.uint16(140))
    assert found.mask.detector_offset == 140.0
    np.testing.assert_array_equal(found.labels, expected.labels)
    np.testing.assert_allclose(found.centres, expected.centres, atol=1e-6)
    np.testing.assert_allclose(found.mean_patterns, expected.mean_patterns, rtol=1e-6, atol=1e-6)


def test_cli_records_and_takes_the_offset(counting_scan, tmp_path, run_cli):
    path = tmp_path / "pedestal.npy"
    np.save(path, counting_scan.data + np.uint16(100))
    k = counting_scan.n_regions
    run = run_cli("cluster", path, "-k", k, "--out", tmp_path / "auto", "--quiet")
    assert run.code == 0, run.err
    summary = json.loads((tmp_path / "auto" / "summary.json").read_text())
    assert summary["mask"]["detector_offset"] == 100.0 and summary["parameters"]["offset"] == "auto"
    run = run_cli("cluster", path, "-k", k, "--offset", "60", "--out", tmp_path / "given", "--quiet")
    assert run.code == 0, run.err
    assert json.loads((tmp_path / "given" / "summary.json").read_text())["mask"]["detector_offset"] == 60.0
    run = run_cli("cluster", path, "-k", k, "--offset", "-2", "--out", tmp_path / "bad", "--quiet")
    assert run.code != 0 and "offset" in run.err
    assert not (tmp_path / "bad").exists()
