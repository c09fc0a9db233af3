"""The detector masks on their success paths: the beam search, the ``auto`` radius rule, discs
and annuli centred on the found beam, explicit centres, boolean arrays and ``.npy`` files.

The beams are synthetic with a known centre, radius and halo; every expected mask is built
with numpy from those known values (or from the reported beam, for the geometry of the disc).
"""

from __future__ import annotations

import json

import numpy as np
from scipy import ndimage
import pytest

import gpu4d
from gpu4d.masks import find_beam

DETECTOR = (48, 44)
#: How far the found centre may be from the true one: the beam is a disc drawn with exact
#: pixel coverage, so only the 1-px smoothing and the cut at half height move the centroid
#: (measured below 0.15 px; a halo cut by the detector edge moves it most).
CENTRE_TOL = 0.25
#: The auto radius is read off 1-px rings of the radial profile: quantization of 1 px.
RING_TOL = 1.0


def disc_coverage(shape, centre, radius, oversample=8) -> np.ndarray:
    """Share of each pixel inside the disc (exact up to 1/oversample^2): an anti-aliased disc."""
    yy, xx = np.indices(shape, dtype=np.float64)
    offsets = (np.arange(oversample) + 0.5) / oversample - 0.5
    cover = np.zeros(shape)
    for dy in offsets:
        for dx in offsets:
            cover += np.hypot(yy + dy - centre[0], xx + dx - centre[1]) <= radius
    return cover / oversample**2


def beam_pattern(centre, radius, *, height=1000.0, background=5.0, halo=0.0, length=3.0, shape=DETECTOR):
    """A mean pattern: a flat disc of ``height`` over ``background``, and outside it a halo
    ``halo * height * exp(-(r - radius) / length)``."""
    yy, xx = np.indices(shape, dtype=np.float64)
    r = np.hypot(yy - centre[0], xx - centre[1])
    tail = halo * height * np.exp(-np.clip(r - radius, 0, None) / length) * (r > radius)
    return background + height * disc_coverage(shape, centre, radius) + tail


def disc(centre, radius, shape=DETECTOR) -> np.ndarray:
    yy, xx = np.indices(shape, dtype=np.float64)
    return np.hypot(yy - centre[0], xx - centre[1]) <= radius


def ring_distance(centre, shape=DETECTOR) -> np.ndarray:
    yy, xx = np.indices(shape, dtype=np.float64)
    return np.hypot(yy - centre[0], xx - centre[1])


def beam_scan(centre, radius, *, halo=0.0, length=3.0, scan=(6, 5), seed=0):
    """A scan whose patterns are the beam plus one of two spot sets far from the beam,
    with Poisson noise: (data uint16 (ny, nx, qy, qx), truth (ny, nx))."""
    rng = np.random.default_rng(seed)
    mean = beam_pattern(centre, radius, halo=halo, length=length)
    truth = (np.add.outer(np.arange(scan[0]), np.arange(scan[1])) % 2).astype(int)
    expected = np.repeat(mean[None], truth.size, 0).reshape(*scan, *DETECTOR)
    spots = [(2, 2), (DETECTOR[0] - 3, DETECTOR[1] - 3)]  # corners: far from any beam used here
    for (y, x), region in zip(spots, (0, 1)):
        expected[truth == region, y, x] += 300.0
    return rng.poisson(expected).astype(np.uint16), truth


# -- find_beam and the auto radius rule ---------------------------------------------------------


@pytest.mark.parametrize("centre, radius", [((20.3, 17.6), 6.0), ((31.7, 25.2), 8.0), ((12.5, 30.0), 3.5)])
def test_find_beam_centre_and_half_maximum_radius(centre, radius):
    found = find_beam(beam_pattern(centre, radius))
    np.testing.assert_allclose(found["centre"], centre, atol=CENTRE_TOL)
    # the area above half height is the disc's (the 1-px smoothing keeps the half-height line)
    assert found["half_max_radius"] == pytest.approx(radius, abs=0.35)


@pytest.mark.parametrize("radius", [3.5, 6.0, 8.0])
def test_auto_radius_without_halo_is_just_past_the_disc_edge(radius):
    # the smoothed edge (a Gaussian of 1 px) falls to 5% of the height 1.645 px outside the
    # disc; the rule takes at least 1.25 x the half-maximum radius, then adds 1.5 px
    found = find_beam(beam_pattern((22.4, 21.1), radius))
    expected = max(radius + 1.645, 1.25 * radius) + 1.5
    assert found["mask_radius"] == pytest.approx(expected, abs=RING_TOL)


@pytest.mark.parametrize("halo, length", [(0.3, 3.0), (0.2, 2.0), (0.45, 2.5)])
def test_auto_radius_follows_the_halo_to_five_percent(halo, length):
    radius = 6.0
    found = find_beam(beam_pattern((22.4, 21.1), radius, halo=halo, length=length))
    # the halo falls to 5% of the beam's height at radius + length * ln(halo / 0.05)
    tail = radius + length * np.log(halo / 0.05)
    assert 1.25 * radius < tail < 3 * radius  # the rule's bounds do not act here
    assert found["mask_radius"] == pytest.approx(tail + 1.5, abs=RING_TOL)


def test_auto_radius_is_capped_at_three_half_maximum_radii():
    radius, halo, length = 4.0, 0.3, 6.0
    # the halo is above 5% of the height out to 14.8 px, beyond 3 x 4 px (a wide detector, so
    # that the median background is the detector's, not the halo's)
    assert radius + length * np.log(halo / 0.05) > 3 * radius + RING_TOL
    found = find_beam(beam_pattern((47.5, 45.2), radius, halo=halo, length=length, shape=(96, 96)))
    assert found["half_max_radius"] == pytest.approx(radius, abs=0.35)
    assert found["mask_radius"] == pytest.approx(3 * found["half_max_radius"] + 1.5, rel=1e-9)


def test_a_sharp_spot_brighter_at_its_peak_is_not_taken_for_the_beam():
    """At low dose a Bragg spot a pixel wide can peak higher than a broad direct-beam disc while
    holding a sixth of its electrons: the beam is the disc (the spot won before 2026-11-30)."""
    mean = beam_pattern((24.3, 16.6), 6.0, height=10.0, background=1.0)
    yy, xx = np.indices(DETECTOR, dtype=np.float64)
    mean += 50.0 * np.exp(-((yy - 24.0) ** 2 + (xx - 33.0) ** 2) / (2 * 0.7**2))  # 16 px away
    smoothed = ndimage.gaussian_filter(mean, 1.0)
    assert smoothed[24, 33] > smoothed[24, 17]  # the spot peaks higher
    found = find_beam(mean)
    assert np.allclose(found["centre"], (24.3, 16.6), atol=CENTRE_TOL)
    assert found["half_max_radius"] == pytest.approx(6.0, abs=0.5)


def test_flat_pattern_has_no_beam():
    with pytest.raises(gpu4d.InputError, match="mask=auto: the mean pattern is flat, no direct beam"):
        find_beam(np.full(DETECTOR, 7.0))


# -- the masks gpu4d.cluster builds ---------------------------------------------------------------

CENTRE, RADIUS = (20.3, 23.6), 6.0


@pytest.fixture(scope="module")
def scan():
    return beam_scan(CENTRE, RADIUS, halo=0.3, length=3.0)


def test_auto_mask_is_the_disc_of_the_rule_on_the_found_beam(scan):
    data, truth = scan
    result = gpu4d.cluster(data, 2, mask="auto")
    mask = result.mask
    np.testing.assert_allclose(mask.centre, CENTRE, atol=CENTRE_TOL)
    tail = RADIUS + 3.0 * np.log(0.3 / 0.05)
    assert mask.radius == pytest.approx(tail + 1.5, abs=RING_TOL)
    np.testing.assert_array_equal(mask.masked, disc(mask.centre, mask.radius))
    assert not result.centroids[:, mask.masked].any()
    described = mask.describe()
    assert described["kind"] == "auto" and described["n_masked_pixels"] == int(mask.masked.sum())
    assert described["beam"]["mask_radius"] == mask.radius
    # with the beam and its halo masked, the two spot sets decide the clusters
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(truth.ravel(), result.labels.ravel()) >= 0.95


@pytest.mark.parametrize("radius", [2.0, 9.5])
def test_radius_mask_is_a_disc_on_the_found_beam(scan, radius):
    result = gpu4d.cluster(scan[0], 2, mask=str(radius))
    assert result.mask.kind == "disc" and result.mask.radius == radius
    np.testing.assert_allclose(result.mask.centre, CENTRE, atol=CENTRE_TOL)
    np.testing.assert_array_equal(result.mask.masked, disc(result.mask.centre, radius))
    # a number works as well as the text
    np.testing.assert_array_equal(gpu4d.cluster(scan[0], 2, mask=radius).mask.masked, result.mask.masked)


def test_explicit_centre_is_used_whatever_the_beam(scan):
    result = gpu4d.cluster(scan[0], 2, mask="10,12.5,4")
    assert result.mask.centre == (10.0, 12.5)
    np.testing.assert_array_equal(result.mask.masked, disc((10.0, 12.5), 4.0))
    tuple_mask = gpu4d.cluster(scan[0], 2, mask=(10, 12.5, 4)).mask.masked
    np.testing.assert_array_equal(tuple_mask, result.mask.masked)


def test_annulus_keeps_the_ring_around_the_found_beam(scan):
    result = gpu4d.cluster(scan[0], 2, mask="annulus:8,15")
    centre = result.mask.centre
    np.testing.assert_allclose(centre, CENTRE, atol=CENTRE_TOL)
    r = ring_distance(centre)
    np.testing.assert_array_equal(result.mask.masked, (r < 8) | (r > 15))
    assert (result.mask.inner, result.mask.outer) == (8.0, 15.0)


def spotted_mask():
    masked = np.zeros(DETECTOR, bool)
    masked[disc(CENTRE, 11.0)] = True
    masked[:, :3] = True  # a dead column band
    return masked


@pytest.mark.parametrize("form", ["bool", "int01", "npy_path", "npy_text"])
def test_array_and_npy_masks_are_used_as_given(scan, tmp_path, form):
    masked = spotted_mask()
    if form == "bool":
        value = masked
    elif form == "int01":
        value = masked.astype(np.uint8)
    else:
        path = tmp_path / "mask.npy"
        np.save(path, masked)
        value = path if form == "npy_path" else str(path)
    result = gpu4d.cluster(scan[0], 2, mask=value)
    assert result.mask.kind == "array"
    np.testing.assert_array_equal(result.mask.masked, masked)
    assert not result.centroids[:, masked].any()


def test_masked_pixels_do_not_change_the_result(scan):
    # whatever masked pixels hold (here noise brighter than anything kept), the clustering and
    # the centroids on the kept pixels are the same. Without alignment: the descan is measured
    # on the direct beam, which is under the mask by design, so there what the masked pixels
    # hold does count (the default "auto" alignment would measure this noise).
    data, truth = scan
    masked = spotted_mask()
    noisy = data.copy()
    rng = np.random.default_rng(5)
    noisy[..., masked] = rng.integers(0, 60000, noisy[..., masked].shape, dtype=np.uint16)
    clean, dirty = (gpu4d.cluster(d, 2, mask=masked, align=None) for d in (data, noisy))
    assert clean.parameters["align"] is None and clean.centres is None
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(truth.ravel(), clean.labels.ravel()) >= 0.95
    np.testing.assert_array_equal(clean.labels, dirty.labels)
    np.testing.assert_allclose(clean.centroids, dirty.centroids, rtol=1e-6)


def test_cli_npy_mask_and_summary(scan, tmp_path, run_cli):
    data, _ = scan
    scan_path, mask_path = tmp_path / "scan.npy", tmp_path / "mask.npy"
    np.save(scan_path, data)
    np.save(mask_path, spotted_mask())
    out = tmp_path / "run"
    run = run_cli("cluster", scan_path, "-k", "2", "--mask", mask_path, "--out", out, "-q", "--no-figures")
    assert run.code == 0, run.err
    np.testing.assert_array_equal(np.load(out / "mask.npy"), spotted_mask())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mask"]["kind"] == "array"
    assert summary["mask"]["n_masked_pixels"] == int(spotted_mask().sum())
    assert "mask     array" in run.out


def test_cli_auto_mask_reports_the_beam(scan, tmp_path, run_cli):
    scan_path = tmp_path / "scan.npy"
    np.save(scan_path, scan[0])
    out = tmp_path / "run"
    run = run_cli("cluster", scan_path, "-k", "2", "--out", out, "-q", "--no-figures")  # auto is the default
    assert run.code == 0, run.err
    summary = json.loads((out / "summary.json").read_text())["mask"]
    np.testing.assert_allclose(summary["centre"], CENTRE, atol=CENTRE_TOL)
    np.testing.assert_array_equal(np.load(out / "mask.npy"), disc(summary["centre"], summary["radius"]))
    cy, cx = summary["centre"]
    assert f"mask     auto (centre {cy:.1f}, {cx:.1f}, radius {summary['radius']:.1f})" in run.out
