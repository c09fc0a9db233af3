"""The quality benchmark's scan generators make what they claim: they are its ground truth.

Each check measures the generated data itself (region shares from the labels, counts from the
patterns, beam centres by a thresholded centre of mass, the direct beam's strength across the
scan) on a tiny scan, and the diffsims orientations against the zone law.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from quality import catalogue, fields, layouts  # noqa: E402


def _block_means(data: np.ndarray, block: int) -> np.ndarray:
    """Mean pattern of each block x block group of probe positions: (by, bx, qy, qx) float64."""
    ny, nx, qy, qx = data.shape
    by, bx = ny // block, nx // block
    trimmed = data[: by * block, : bx * block].astype(np.float64)
    return trimmed.reshape(by, block, bx, block, qy, qx).mean(axis=(1, 3))


def _beam_centres(patterns: np.ndarray, radius: float) -> np.ndarray:
    """Centre (..., 2) of the pixels above half the maximum within ``radius`` of the detector
    centre: the direct beam's, for the mean patterns of small blocks."""
    qy, qx = patterns.shape[-2:]
    yy, xx = np.mgrid[0:qy, 0:qx]
    window = (yy - (qy - 1) / 2) ** 2 + (xx - (qx - 1) / 2) ** 2 <= radius**2
    flat = patterns.reshape(-1, qy, qx) * window
    out = np.empty((flat.shape[0], 2))
    for i, p in enumerate(flat):
        w = np.where(p >= 0.5 * p.max(), p, 0.0)
        out[i] = (w * yy).sum() / w.sum(), (w * xx).sum() / w.sum()
    return out.reshape(*patterns.shape[:-2], 2)


# ------------------------------------------------------------------------------ catalogue
def test_catalogue_spans_what_the_issue_asks():
    specs = catalogue.SCANS
    assert len(specs) >= 30
    assert len({s.name for s in specs}) == len(specs)
    for generator in catalogue.GENERATORS:
        halves = [s.half for s in specs if s.generator == generator]
        assert halves.count("tune") == halves.count("holdout") > 0
    doses = [s.params["dose"] for s in specs]
    assert min(doses) <= 60 and max(doses) >= 4000
    detectors = {s.params.get("detector", 64) for s in specs}
    assert min(detectors) == 64 and max(detectors) == 256
    assert {s.params.get("dtype", "uint16") for s in specs} == {"uint8", "uint16"}
    diffsims = [s.params for s in specs if s.generator == "diffsims"]
    assert len({p.get("phase", "Al") for p in diffsims}) >= 6
    assert any(p.get("close_pairs", 0) for p in diffsims)
    assert {p.get("drift", "none") for p in diffsims} == {"none", "linear", "curved"}
    assert {p.get("drift_integer", False) for p in diffsims if p.get("drift", "none") != "none"} == {True, False}


def test_halves_are_deterministic_and_seeds_distinct():
    assert [s.key() for s in catalogue.SCANS] == [s.key() for s in catalogue.SCANS]
    assert len({(s.generator, s.seed) for s in catalogue.SCANS}) == len(catalogue.SCANS)
    assert set(catalogue.select("tune")).isdisjoint(catalogue.select("holdout"))


def test_fresh_seeds_are_neither_halfs_and_keep_the_conditions():
    fresh = catalogue.select(seed_offset=5003)
    used = {(s.generator, s.seed) for s in catalogue.SCANS}
    assert len(fresh) == len(catalogue.SCANS)
    assert not used & {(s.generator, s.seed) for s in fresh}
    for old, new in zip(catalogue.SCANS, fresh):
        assert new.name == f"{old.name}-s5003" and new.params == old.params and new.half == old.half
        assert new.key() != old.key()
    assert [s.name for s in catalogue.select("tune", only="syn-basic", seed_offset=5003)] == ["syn-basic-t-s5003"]
    with pytest.raises(ValueError, match="seed_offset=1 gives seeds of the tune or holdout half"):
        catalogue.select(seed_offset=1)  # the tune seeds + 1 are the holdout seeds


def test_benchmark_features_reproduce_cluster_inertia():
    """bench_quality's inertia gap needs its feature helper to rebuild cluster's features (offset,
    spikes, mask, alignment, detector blur): the inertia of cluster's own labels must match."""
    import bench_quality
    import gpu4d
    from quality import synthetic_scans

    data, labels, _ = synthetic_scans.make(3, scan=(24, 24), detector=64, n_grains=2, drift_px=1.0, dose=600, dtype="uint8")
    result = gpu4d.cluster(data, 3, exact=True)
    assert result.parameters["blur_px"] > 0  # the default blur is on, so the helper must blur too
    features = bench_quality.preprocessed_features(data, {})
    inertia = bench_quality.partition_inertia(features, result.labels.ravel())
    assert inertia == pytest.approx(result.inertia, rel=bench_quality.INERTIA_CHECK_RTOL)
    unblurred = bench_quality.partition_inertia(bench_quality.preprocessed_features(data, {"blur": "none"}), result.labels.ravel())
    assert unblurred != pytest.approx(result.inertia, rel=bench_quality.INERTIA_CHECK_RTOL)


def test_lloyd_from_the_truth_matches_scikit_learn():
    """loARI's optimum: Lloyd from a partition, against scikit-learn's Lloyd started from the same
    centroids. A "truth" that is no KMeans optimum (points spread evenly along a line, split at
    a fifth) moves to the middle; a truth that is one (two far blobs) stays."""
    import bench_quality
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(3)
    line = np.column_stack([np.linspace(0.0, 1.0, 400), rng.normal(0, 0.01, 400)]).astype(np.float32)
    blobs = np.concatenate([rng.normal(0, 0.1, (150, 3)), rng.normal(3, 0.1, (50, 3))]).astype(np.float32)
    for features, truth in ((line, (line[:, 0] > 0.2).astype(int)), (blobs, np.repeat([0, 1], [150, 50]))):
        ours = bench_quality.lloyd_optimum_from(features, truth)
        start = np.stack([features[truth == i].mean(axis=0) for i in (0, 1)])
        reference = KMeans(2, init=start, n_init=1, tol=0, algorithm="lloyd").fit(features.astype(np.float64)).labels_
        assert adjusted_rand_score(ours, reference) == 1.0
    assert adjusted_rand_score(truth, ours) == 1.0  # the blobs' truth is an optimum
    line_optimum = bench_quality.lloyd_optimum_from(line, (line[:, 0] > 0.2).astype(int))
    assert abs(np.mean(line_optimum == line_optimum[-1]) - 0.5) < 0.02  # the line's split moved to its middle


# ------------------------------------------------------------------------------ layouts and fields
def test_band_and_inclusions_cover_the_share_asked():
    rng = np.random.default_rng(3)
    grains = layouts.voronoi_grains((60, 50), 4, rng, min_share=0.08)
    assert np.bincount(grains.ravel()).min() / grains.size >= 0.08
    band = layouts.band(grains, 1, 0.03, rng)
    assert abs(band.mean() - 0.03) < 2 / 60  # to about one scan row
    assert np.all(grains[band] == 1)
    spots = layouts.inclusions(grains, 0.04, 2, rng)
    assert abs(spots.mean() - 0.04) < 0.01


@pytest.mark.parametrize("kind", ["linear", "curved"])
@pytest.mark.parametrize("integer", [False, True])
def test_drift_field_amplitude_and_rounding(kind, integer):
    shift = fields.drift_field((40, 30), kind, 2.0, integer, np.random.default_rng(1))
    assert np.abs(shift).max() == pytest.approx(2.0, abs=0.5 if integer else 1e-9)
    assert np.array_equal(shift, np.round(shift)) == integer
    assert not np.any(fields.drift_field((40, 30), "none", 2.0, integer, np.random.default_rng(1)))


# ------------------------------------------------------------------------------ diffsims scans
@pytest.fixture(scope="module")
def diffsims_scan():
    pytest.importorskip("diffsims", reason="diffsims (the test extra) is not installed")
    from quality import diffsims_scans

    params = dict(
        scan=(32, 32), detector=48, phase="Cu", n_grains=3, band_share=0.04, drift="linear",
        drift_px=2.0, dose=200, dtype="uint8", hot=2, dead=2,
    )
    return diffsims_scans.make(11, **params), params


def test_diffsims_scan_holds_the_regions_asked(diffsims_scan):
    (data, labels, info), params = diffsims_scan
    assert data.shape == (32, 32, 48, 48) and data.dtype == np.uint8
    assert labels.shape == (32, 32) and labels.dtype == np.int32
    shares = layouts.shares(labels)
    assert len(shares) == 4  # three grains and the band
    assert shares[3] == pytest.approx(0.04, abs=1.5 / 32)
    assert shares.min() == shares[3]


def test_diffsims_scan_dose_bad_pixels_and_thickness(diffsims_scan):
    (data, labels, info), params = diffsims_scan
    good = np.ones(data.shape[2:], bool)
    for y, x in info["bad_pixels"]["hot"] + info["bad_pixels"]["dead"]:
        good[y, x] = False
    counts = data[:, :, good].sum(axis=-1)
    assert counts.mean() == pytest.approx(200, rel=0.05)
    for y, x in info["bad_pixels"]["dead"]:
        assert not data[:, :, y, x].any()
    for y, x in info["bad_pixels"]["hot"]:
        assert data[:, :, y, x].mean() > 3 * np.median(data[:, :, good].max(axis=-1))
    # the direct beam's peak over the background just outside it dims >= 5-fold across the wedge
    blocks = _block_means(data, 4)
    radius = 0.045 * data.shape[2]
    centres = _beam_centres(blocks, radius=radius + 3)
    yy, xx = np.mgrid[0 : data.shape[2], 0 : data.shape[3]]
    peaks = []
    for pattern, (cy, cx) in zip(blocks.reshape(-1, *data.shape[2:]), centres.reshape(-1, 2)):
        r = np.hypot(yy - cy, xx - cx)
        peaks.append(pattern[(r <= 1.0) & good].mean() - np.median(pattern[(r > radius + 2) & (r < radius + 5) & good]))
    assert max(peaks) / min(peaks) > 5


def test_diffsims_scan_drifts_when_asked(diffsims_scan):
    (data, labels, info), params = diffsims_scan
    centres = _beam_centres(_block_means(data, 4), radius=0.045 * 48 + 3)
    spread = centres.reshape(-1, 2).max(axis=0) - centres.reshape(-1, 2).min(axis=0)
    assert spread.max() > 2.0  # +-2 px asked, both components ramp across the scan
    from quality import diffsims_scans

    still, _, _ = diffsims_scans.make(11, **{**params, "drift": "none"})
    centres = _beam_centres(_block_means(still, 4), radius=0.045 * 48 + 3)
    assert np.ptp(centres.reshape(-1, 2), axis=0).max() < 0.6


def test_diffsims_scan_is_reproducible_and_separable(diffsims_scan):
    (data, labels, info), params = diffsims_scan
    from quality import diffsims_scans

    again, labels_again, _ = diffsims_scans.make(11, **params)
    assert np.array_equal(again, data) and np.array_equal(labels_again, labels)
    assert info["oracle_error"] <= 0.02  # the regions can be told apart at this dose


@pytest.mark.parametrize("name,zone", [("Al", (0, 1, 1)), ("Ti", (1, 0, 0)), ("U", (1, 1, 0)), ("TiO2", (1, 0, 1))])
def test_zone_axis_orientation_obeys_the_zone_law(name, zone):
    pytest.importorskip("diffsims", reason="diffsims (the test extra) is not installed")
    from quality import crystals

    matrix = crystals.zone_matrix(name, zone, in_plane_rad=0.7, tilt_rad=0.0, tilt_axis_rad=0.0)
    hkl = crystals.zone_hkl(name, matrix, reciprocal_radius=1.2)
    assert len(hkl) >= 6
    assert np.all(np.abs(hkl @ np.asarray(zone)) < 1e-6)  # every spot in the zero-order zone


# ------------------------------------------------------------------------------ gpu4d.synthetic scans
def test_synthetic_scan_wrapper():
    from quality import synthetic_scans

    data, labels, info = synthetic_scans.make(
        5, scan=(24, 24), detector=48, n_grains=2, drift_px=1.5, dose=1000, dtype="uint8", hot=2, dead=2
    )
    assert data.shape == (24, 24, 48, 48) and data.dtype == np.uint8
    assert labels.shape == (24, 24) and len(np.unique(labels)) == 3
    good = np.ones((48, 48), bool)
    for y, x in info["bad_pixels"]["hot"] + info["bad_pixels"]["dead"]:
        good[y, x] = False
    assert data[:, :, good].sum(axis=-1).mean() == pytest.approx(1000, rel=0.2)
    for y, x in info["bad_pixels"]["dead"]:
        assert not data[:, :, y, x].any()
    assert info["beam_ratio"] > 5
    centres = _beam_centres(_block_means(data, 4), radius=48 / 25 + 3)
    assert np.ptp(centres.reshape(-1, 2), axis=0).max() > 1.5


def test_spikes_hit_the_share_of_frames_asked():
    from quality import render

    data = np.random.default_rng(0).poisson(2.0, (10, 10, 16, 16)).astype(np.uint8)
    before = data.copy()
    hit = render.spikes(data, 0.2, 3000.0, 2, np.random.default_rng(1))
    assert hit.size == 20
    changed = np.flatnonzero((data != before).reshape(100, -1).any(axis=1))
    np.testing.assert_array_equal(changed, hit)
    # a 2x2 blob at the dtype's ceiling in each
    assert ((data.reshape(100, -1)[hit] == 255).sum(axis=1) == 4).all()
