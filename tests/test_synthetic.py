"""The synthetic 4D-STEM generator (gpu4d.synthetic) and its .blo writer.

The physics is checked with an independent reference of the original method (numpy and
scikit-learn only): mask the direct beam, scale each pattern by its maximum, KMeans.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.preprocessing import normalize
from threadpoolctl import threadpool_limits

from gpu4d.errors import InputError
from gpu4d.synthetic import SyntheticScan, make_scan, write_blo

SMALL = dict(scan_shape=(12, 14), detector_shape=(48, 48))


def reference_ari(scan: SyntheticScan, mask: bool = True) -> float:
    """The original method on ``scan``, scored against its ground truth."""
    ny, nx, qy, qx = scan.data.shape
    x = scan.data.reshape(ny * nx, qy * qx).astype(np.float32)
    if mask:
        yy, xx = np.indices((qy, qx))
        r = np.hypot(yy - (qy - 1) / 2, xx - (qx - 1) / 2)
        x[:, (r <= 1.3 * scan.beam_radius + 2).ravel()] = 0
    # One thread: on a busy shared machine OpenMP's spinning threads make KMeans 5x slower.
    with threadpool_limits(1):
        kmeans = KMeans(scan.n_regions, n_init=4, random_state=0)
        labels = kmeans.fit_predict(normalize(x, norm="max"))
    return adjusted_rand_score(scan.labels.ravel(), labels)


def disc(shape: tuple[int, int], centre, radius: float) -> np.ndarray:
    yy, xx = np.indices(shape)
    return np.hypot(yy - centre[0], xx - centre[1]) <= radius


# ------------------------------------------------------------------------------ physics
SEEDS = (1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def aris() -> dict[str, np.ndarray]:
    """ARIs of the original method on 5 scans (seeds 1-5), with the mask, without it, and with
    drift, as arrays over the seeds."""
    found = {"masked": [], "unmasked": [], "drifted": []}
    for seed in SEEDS:
        kw = dict(scan_shape=(24, 24), detector_shape=(64, 64), seed=seed)
        plain, drifted = make_scan(**kw), make_scan(drift_px=1.5, **kw)
        assert np.array_equal(plain.labels, drifted.labels)  # drift changes nothing else
        found["masked"].append(reference_ari(plain))
        found["unmasked"].append(reference_ari(plain, mask=False))
        found["drifted"].append(reference_ari(drifted))
    return {name: np.array(values) for name, values in found.items()}


# Measured 2026-11-30 on these 5 scans: masked 1.000 on all; unmasked 0.35-0.73 (median 0.58);
# drifted 0.75-0.87 (median 0.78). The claims hold by wide margins on the median and on each scan
# but one, so a different noise draw cannot flip them.
def test_masked_kmeans_finds_grains_and_defect(aris):
    assert (aris["masked"] >= 0.95).sum() >= len(SEEDS) - 1, aris["masked"]


def test_unmasked_kmeans_follows_thickness_too(aris):
    assert np.median(aris["unmasked"]) <= np.median(aris["masked"]) - 0.2, aris
    assert (aris["unmasked"] < aris["masked"] - 0.1).sum() >= len(SEEDS) - 1, aris


def test_drift_spoils_masked_kmeans(aris):
    assert np.median(aris["drifted"]) <= np.median(aris["masked"]) - 0.1, aris
    assert (aris["drifted"] < aris["masked"]).sum() >= len(SEEDS) - 1, aris


def test_thickness_dims_the_beam_and_feeds_the_spots():
    scan = make_scan((16, 16), (96, 96), dtype="float32", dose=1e6, seed=2)
    ny, nx, qy, qx = scan.data.shape
    centre = ((qy - 1) / 2, (qx - 1) / 2)
    bright_field = disc((qy, qx), centre, scan.beam_radius)  # a virtual BF detector
    outside = ~disc((qy, qx), centre, 1.3 * scan.beam_radius + 2)
    thin = np.unravel_index(np.argmin(scan.thickness_nm), (ny, nx))
    thick = np.unravel_index(np.argmax(scan.thickness_nm), (ny, nx))
    assert 5 <= scan.data[thin][bright_field].sum() / scan.data[thick][bright_field].sum() <= 10
    assert scan.data[thick][outside].sum() > 2 * scan.data[thin][outside].sum()
    # thin: the beam outshines every spot by far
    assert scan.data[thin][bright_field].max() > 10 * scan.data[thin][outside].max()
    flat = make_scan((8, 8), (48, 48), thickness_gradient=False, seed=2)
    assert np.ptp(flat.thickness_nm) == 0


# ------------------------------------------------------------------------------ the arrays
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_shapes_and_dtypes(dtype):
    scan = make_scan(**SMALL, n_grains=3, dtype=dtype, seed=5)
    assert scan.data.shape == (12, 14, 48, 48) and scan.data.dtype == np.dtype(dtype)
    assert scan.labels.shape == (12, 14) and scan.labels.dtype == np.int32
    assert scan.beam_centres.shape == (12, 14, 2) and scan.beam_centres.dtype == np.float64
    assert scan.thickness_nm.shape == (12, 14)
    assert scan.n_regions == 4
    assert scan.beam_radius == pytest.approx(48 / 25)
    assert scan.scan_step_nm > 0 and scan.detector_scale > 0
    assert np.all(scan.data >= 0)
    np.testing.assert_array_equal(scan.data, np.round(scan.data))  # whole counts


def test_uint8_is_the_counts_times_a_gain():
    scan = make_scan(**SMALL, dtype="uint8", seed=5)
    counts = make_scan(**SMALL, dtype="uint16", seed=5).data.astype(np.float64)
    assert 150 <= scan.data.max() <= 255
    # the same electrons, scaled by one gain below 1 and rounded: nothing wraps around
    gain = (scan.data * counts).sum() / (counts**2).sum()
    assert 0 < gain < 1
    unsaturated = scan.data < 255
    np.testing.assert_allclose(scan.data[unsaturated], gain * counts[unsaturated], atol=0.6)


def test_same_seed_same_scan_other_seed_other_scan():
    a, b = make_scan(**SMALL, seed=4), make_scan(**SMALL, seed=4)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = make_scan(**SMALL, seed=5)
    assert not np.array_equal(a.data, c.data)


@pytest.mark.parametrize("n_grains", [1, 4, 6])
def test_labels_cover_every_region_and_the_defect_sits_inside_one_grain(n_grains):
    scan = make_scan((40, 40), (48, 48), n_grains=n_grains, seed=n_grains)
    assert scan.n_regions == n_grains + 1
    assert set(np.unique(scan.labels)) == set(range(n_grains + 1))
    defect = scan.labels == n_grains
    # every neighbour of a defect position is the defect or one and the same grain
    padded = np.pad(scan.labels, 1, constant_values=-1)
    neighbours = set()
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        neighbours |= set(padded[dy : dy + 40, dx : dx + 40][defect].tolist())
    assert len(neighbours - {n_grains, -1}) == 1


def test_without_defect_there_are_only_grains():
    scan = make_scan(**SMALL, n_grains=3, defect=False, seed=6)
    assert scan.n_regions == 3
    assert set(np.unique(scan.labels)) == {0, 1, 2}


def test_beam_centres_follow_the_drift():
    still = make_scan(**SMALL, seed=3)
    np.testing.assert_array_equal(still.beam_centres, np.full((12, 14, 2), 23.5))

    scan = make_scan((24, 24), (96, 96), drift_px=1.5, dtype="float32", dose=1e6, seed=3)
    shift = scan.beam_centres - 47.5
    np.testing.assert_allclose(np.abs(shift).max(axis=(0, 1)), [1.5, 1.5])
    assert np.abs(np.diff(shift, axis=0)).max() < 0.3  # smooth: a few px over 24 positions
    assert np.abs(np.diff(shift, axis=1)).max() < 0.3
    # the data's beam is where the truth says: centre of mass of a disc around it that holds the
    # whole beam and no spot (a centre off by a pixel would show as a 1-pixel error)
    yy, xx = np.indices((96, 96))
    for pos in [(0, 0), (23, 23), (3, 20), (17, 6)]:
        truth = scan.beam_centres[pos]
        pattern = scan.data[pos] * disc((96, 96), truth, scan.beam_radius + 2.5)
        centre = [(pattern * yy).sum() / pattern.sum(), (pattern * xx).sum() / pattern.sum()]
        np.testing.assert_allclose(centre, truth, atol=0.05)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_grains=0), "n_grains=0"),
        (dict(dtype="int8"), "dtype='int8'"),
        (dict(drift_px=-1.0), "drift_px=-1.0"),
        (dict(dose=0), "dose=0"),
        (dict(scan_shape=(2, 64)), r"scan_shape=\(2, 64\)"),
        (dict(detector_shape=(64,)), r"detector_shape=\(64,\)"),
        (dict(seed=1.5), "seed=1.5"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(InputError, match=match):
        make_scan(**kwargs)


# ------------------------------------------------------------------------------ .blo files
def test_write_blo_round_trip(tmp_path):
    hs = pytest.importorskip("hyperspy.api")
    scan = make_scan((6, 9), (32, 32), dtype="uint8", seed=8, scan_step_nm=3.5)
    path = tmp_path / "scan.blo"
    path.write_bytes(b"an older file")  # replaced
    write_blo(path, scan.data, scan_step_nm=scan.scan_step_nm, detector_scale=0.25)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.blo"]  # no temporary left

    signal = hs.load(path, lazy=True)
    np.testing.assert_array_equal(np.asarray(signal.data), scan.data)
    x, y = signal.axes_manager.navigation_axes  # HyperSpy orders axes x before y
    qx, qy = signal.axes_manager.signal_axes
    assert (y.scale, x.scale, y.units, x.units) == (3.5, 3.5, "nm", "nm")
    assert qy.scale == pytest.approx(0.25)


def test_write_blo_refuses_what_it_cannot_store(tmp_path):
    path = tmp_path / "scan.blo"
    data = np.zeros((2, 3, 16, 16), np.uint16)
    with pytest.raises(InputError, match="data should be a uint8 numpy array for a .blo file, got dtype=uint16"):
        write_blo(path, data)
    with pytest.raises(InputError, match=r"data.shape=\(2, 3, 16, 8\)"):
        write_blo(path, np.zeros((2, 3, 16, 8), np.uint8))
    with pytest.raises(InputError, match="scan_step_nm=0"):
        write_blo(path, np.zeros((2, 3, 16, 16), np.uint8), scan_step_nm=0)
    assert not any(tmp_path.iterdir())
