"""Descan alignment (gpu4d.align): beam-centre measurement, the descan fit, the shifts.

The CPU kernel and the xcorr array code are checked against plain numpy float64 references and
against discs rendered at known sub-pixel positions; the CUDA kernel is checked against the CPU
kernel in ``tests/cudasim/test_beam_centre_cuda.py``.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from gpu4d import align
from gpu4d.errors import InputError
from gpu4d.kernels import pixel_math
from gpu4d.kernels.preprocess import launch_preprocess_cpu

DETECTOR = (48, 48)
CENTRE = (23.7, 24.2)  # expected beam centre (window centre)
RADIUS = 5.0  # beam radius


# ------------------------------------------------------------------------------ rendering
def _disc(shape, cy, cx, radius):
    """Anti-aliased disc: coverage linear across a one-pixel edge (as gpu4d.synthetic)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.clip(radius + 0.5 - np.hypot(yy - cy, xx - cx), 0.0, 1.0)


def _gaussian(shape, cy, cx, sigma):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))


def _patterns(positions, shape=DETECTOR, beam=100.0, background=2.0):
    """(n, qy, qx) float64: a beam disc at each position, two diffraction spots brighter than
    the beam outside the default window, and a flat background."""
    return np.stack(
        [
            beam * _disc(shape, y, x, RADIUS)
            + 1.5 * beam * _gaussian(shape, y + 14, x + 3, 1.2)
            + 0.8 * beam * _gaussian(shape, y - 4, x - 15, 1.2)
            + background
            for y, x in positions
        ]
    )


def _positions(n, spread=2.0, seed=0):
    rng = np.random.default_rng(seed)
    return np.asarray(CENTRE) + rng.uniform(-spread, spread, (n, 2))


def _rms(error):
    return float(np.sqrt(np.mean(np.sum(np.asarray(error, np.float64) ** 2, axis=-1))))


# ------------------------------------------------------------------------------ references
def _com_reference(pattern, centre, window_radius, threshold):
    """Thresholded centre of mass in float64, the plain numpy way."""
    pattern = np.asarray(pattern, np.float64)
    yy, xx = np.mgrid[0 : pattern.shape[0], 0 : pattern.shape[1]]
    inside = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= window_radius**2
    peak = max(pattern[inside].max(initial=0.0), 0.0)
    if peak <= 0:
        return np.array([np.nan, np.nan])
    weight = np.where(inside, np.clip(pattern - threshold * peak, 0.0, None), 0.0)
    return np.array([(weight * yy).sum(), (weight * xx).sum()]) / weight.sum()


def _xcorr_reference(pattern, centre, radius, window_radius):
    """Direct (no FFT) correlation with a disc over integer shifts, then a parabola, float64."""
    pattern = np.asarray(pattern, np.float64)
    my, mx = round(centre[0]), round(centre[1])
    search = window_radius - radius
    reach = int(math.ceil(search))
    best, best_shift = -np.inf, None
    scores = {}
    for sy in range(-reach - 1, reach + 2):
        for sx in range(-reach - 1, reach + 2):
            template = _disc(pattern.shape, my + sy, mx + sx, radius)
            scores[sy, sx] = float((template * pattern).sum())
            allowed = (sy - (centre[0] - my)) ** 2 + (sx - (centre[1] - mx)) ** 2 <= search**2
            if allowed and scores[sy, sx] > best:
                best, best_shift = scores[sy, sx], (sy, sx)
    sy, sx = best_shift

    def vertex(left, middle, right):
        curvature = left - 2 * middle + right
        return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5)) if curvature < 0 else 0.0

    fy = vertex(scores[sy - 1, sx], scores[sy, sx], scores[sy + 1, sx])
    fx = vertex(scores[sy, sx - 1], scores[sy, sx], scores[sy, sx + 1])
    return np.array([my + sy + fy, mx + sx + fx])


# ------------------------------------------------------------------------------ com kernel
@pytest.mark.parametrize("threshold", [0.0, 0.2, 0.5])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_com_kernel_matches_numpy_reference(dtype, threshold):
    rng = np.random.default_rng(1)
    raw = rng.poisson(_patterns(_positions(7))).clip(0, 255).astype(dtype)
    window = align.default_window_radius(RADIUS)
    got = align.measure_centres_cpu(raw, centre=CENTRE, window_radius=window, threshold=threshold)
    want = np.stack([_com_reference(p, CENTRE, window, threshold) for p in raw])
    assert got.dtype == np.float32 and got.shape == (7, 2)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_com_accuracy_noise_free():
    positions = _positions(64)
    raw = _patterns(positions).astype(np.float32)
    got = align.measure_centres(raw, "com", centre=CENTRE, radius=RADIUS)
    # measured: max 0.016 px with the default threshold 0.2
    assert np.abs(got - positions).max() < 0.03


def test_com_accuracy_poisson():
    positions = _positions(64)
    raw = np.random.default_rng(2).poisson(_patterns(positions)).astype(np.uint16)
    got = align.measure_centres(raw, "com", centre=CENTRE, radius=RADIUS)
    # The limit from the noise: the threshold (0.2 of the peak, which Poisson noise lifts to
    # about beam + 2.5 sqrt(beam)) leaves each of the pi R^2 disc pixels a weight w; the centre
    # of mass then varies by sqrt(beam R^2 / 4 / (pi R^2 w^2)) per axis, sqrt(2) that in 2-D
    # (0.053 px here; measured 0.057 px). 64 patterns estimate an rms to 6%: 4 of those on top,
    # and the 0.03 px bias of the noise-free case added in quadrature.
    beam = 100.0
    weight = beam - 0.2 * (beam + 2.5 * np.sqrt(beam))
    expected = np.sqrt(2 * beam * RADIUS**2 / 4 / (np.pi * RADIUS**2 * weight**2))
    assert _rms(got - positions) < np.hypot(expected * (1 + 4 / np.sqrt(2 * got.size)), 0.03)


def test_com_per_pattern_centres_equal_one_by_one():
    raw = _patterns(_positions(5)).astype(np.float32)
    centres = _positions(5, spread=1.0, seed=3)
    together = align.measure_centres_cpu(raw, centre=centres, window_radius=8.0)
    for i in range(5):
        alone = align.measure_centres_cpu(raw[i : i + 1], centre=centres[i], window_radius=8.0)
        np.testing.assert_array_equal(together[i], alone[0])


def test_com_same_for_every_dtype():
    raw = np.random.default_rng(4).poisson(_patterns(_positions(6))).clip(0, 255)
    results = [
        align.measure_centres(raw.astype(dtype), "com", centre=CENTRE, radius=RADIUS)
        for dtype in (np.uint8, np.uint16, np.float32)
    ]
    for result in results[1:]:
        np.testing.assert_allclose(result, results[0], atol=1e-5)


def test_com_writes_into_out():
    raw = _patterns(_positions(3)).astype(np.float32)
    out = np.full((3, 2), -1.0, np.float32)
    assert align.measure_centres_cpu(raw, centre=CENTRE, window_radius=8.0, out=out) is out
    assert np.isfinite(out).all()


# ------------------------------------------------------------------------------ xcorr
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_xcorr_matches_direct_correlation(dtype):
    rng = np.random.default_rng(5)
    raw = rng.poisson(_patterns(_positions(4, spread=2.5))).clip(0, 255).astype(dtype)
    window = align.default_window_radius(RADIUS)
    got = align.xcorr_centres(raw, centre=CENTRE, radius=RADIUS, window_radius=window)
    want = np.stack([_xcorr_reference(p, CENTRE, RADIUS, window) for p in raw])
    np.testing.assert_allclose(got, want, atol=2e-3)  # float32 FFT vs float64 sums


def test_xcorr_accuracy_noise_free():
    positions = _positions(64)
    raw = _patterns(positions).astype(np.float32)
    got = align.measure_centres(raw, "xcorr", centre=CENTRE, radius=RADIUS)
    # the parabola is biased on the cone-like peak of a disc correlation: measured max 0.041 px
    assert np.abs(got - positions).max() < 0.08


def test_xcorr_accuracy_poisson():
    positions = _positions(64)
    raw = np.random.default_rng(2).poisson(_patterns(positions)).astype(np.uint16)
    got = align.measure_centres(raw, "xcorr", centre=CENTRE, radius=RADIUS)
    assert _rms(got - positions) < 0.08  # measured rms 0.044 px


def test_xcorr_window_off_the_detector_edge():
    """A window that sticks out of the detector is zero-padded, not wrapped."""
    shape = (20, 30)
    truth = np.array([[4.3, 25.6]])
    raw = (100 * _disc(shape, *truth[0], 3.0))[None].astype(np.float32)
    got = align.xcorr_centres(raw, centre=(3.0, 27.0), radius=3.0, window_radius=6.0)
    assert np.abs(got - truth).max() < 0.1


# ------------------------------------------------------------------------------ empty windows
@pytest.mark.parametrize("method", ["com", "xcorr"])
def test_no_signal_gives_nan(method):
    raw = _patterns(_positions(4)).astype(np.float32)
    raw[1] = 0.0
    raw[3] = -5.0  # dark-subtracted to nothing
    got = align.measure_centres(raw, method, centre=CENTRE, radius=RADIUS)
    assert np.isnan(got[[1, 3]]).all()
    assert np.isfinite(got[[0, 2]]).all()


def test_com_window_off_the_detector_gives_nan():
    raw = _patterns(_positions(2)).astype(np.float32)
    got = align.measure_centres_cpu(raw, centre=(-40.0, 10.0), window_radius=8.0)
    assert np.isnan(got).all()


def test_empty_batch():
    raw = np.zeros((0, *DETECTOR), np.uint16)
    for method in ("com", "xcorr"):
        assert align.measure_centres(raw, method, centre=CENTRE, radius=RADIUS).shape == (0, 2)


# ------------------------------------------------------------------------------ measure errors
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 1.0}, "threshold=1.0 should be a number in [0, 1)."),
        ({"threshold": -0.1}, "threshold=-0.1 should be a number in [0, 1)."),
        ({"radius": 0}, "radius=0 should be a finite number > 0."),
        ({"window_radius": float("nan")}, "window_radius=nan should be a finite number > 0."),
        ({"engine": "gpu"}, "engine must be one of cpu, cuda; got 'gpu'"),
        ({"centre": (1.0, 2.0, 3.0)}, "centre has shape (3,); it should be (2,) or (n=2, 2)."),
    ],
)
def test_measure_centres_rejects_bad_arguments(kwargs, message):
    arguments = {"centre": CENTRE, "radius": RADIUS} | kwargs
    raw = np.zeros((2, *DETECTOR), np.uint8)
    with pytest.raises(InputError, match=re.escape(message)):
        align.measure_centres(raw, "com", **arguments)


def test_xcorr_needs_room_to_search():
    raw = np.zeros((2, *DETECTOR), np.uint8)
    with pytest.raises(InputError, match="should exceed the beam radius"):
        align.measure_centres(raw, "xcorr", centre=CENTRE, radius=RADIUS, window_radius=5.5)


def test_measure_centres_rejects_unknown_method():
    with pytest.raises(InputError, match="align must be"):
        align.measure_centres(np.zeros((1, 9, 9)), "peak", centre=(4, 4), radius=2)


# ------------------------------------------------------------------------------ the fit
def _smooth_field(ny, nx, seed=0):
    """Beam centres (ny, nx, 2): a linear ramp, a curvature and a slow sinusoid, ~1.5 px."""
    rng = np.random.default_rng(seed)
    v, u = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    field = np.empty((ny, nx, 2))
    for k in range(2):
        a, b, c, phase = rng.uniform(-1, 1, 4)
        field[..., k] = (
            a * v + b * u + 0.3 * c * u * v + 0.25 * np.sin(2.2 * v + 1.7 * u + 3 * phase)
        )
    return np.asarray(CENTRE) + field


def _with_outliers(field, fraction=0.1, noise=0.05, seed=1):
    """Noisy centres with ``fraction`` gross outliers (2-6 px off) and a few NaNs."""
    rng = np.random.default_rng(seed)
    measured = field + rng.normal(0, noise, field.shape)
    outliers = rng.random(field.shape[:2]) < fraction
    size = rng.uniform(2, 6, outliers.sum())
    angle = rng.uniform(0, 2 * np.pi, outliers.sum())
    measured[outliers] += np.stack([size * np.sin(angle), size * np.cos(angle)], axis=1)
    missing = rng.random(field.shape[:2]) < 0.02
    measured[missing] = np.nan
    return measured, outliers, missing


def test_fit_recovers_smooth_field_with_outliers():
    truth = _smooth_field(40, 48)
    measured, outliers, missing = _with_outliers(truth)
    field, inliers = align.fit_descan(measured)
    assert field.shape == truth.shape and inliers.shape == truth.shape[:2]
    assert np.isfinite(field).all()
    # 0.05 px noise per axis averaged over ~4 pi sigma^2 neighbours: measured rms 0.020 px
    assert _rms(field - truth) < 0.035
    assert np.abs(field - truth).max() < 0.15
    assert not inliers[outliers].any()  # every gross outlier is rejected
    assert not inliers[missing].any()
    good = ~outliers & ~missing
    assert inliers[good].mean() > 0.97


def test_polynomial_fit_alone_is_exact_on_a_polynomial():
    ny, nx = 30, 20
    v, u = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    truth = np.stack([10 + 0.8 * v - 0.3 * u + 0.2 * u * v, 12 + 0.5 * u + 0.4 * v * v], axis=-1)
    measured, outliers, _ = _with_outliers(truth, noise=0.0)
    field, inliers = align.fit_descan(measured, order=2, smooth=0)
    np.testing.assert_allclose(field, truth, atol=1e-6)
    assert not inliers[outliers].any()


def test_fit_without_measurements_is_nan():
    field, inliers = align.fit_descan(np.full((4, 5, 2), np.nan))
    assert np.isnan(field).all() and not inliers.any()


def test_fit_lowers_the_order_for_few_measurements():
    centres = np.full((6, 6, 2), np.nan)
    centres[2, 3] = (10.0, 11.0)
    centres[4, 1] = (10.2, 11.1)
    field, inliers = align.fit_descan(centres, order=3)
    assert np.isfinite(field).all()
    np.testing.assert_allclose(field.reshape(-1, 2).mean(axis=0), (10.1, 11.05), atol=0.15)


@pytest.mark.parametrize("shape", [(1, 17), (13, 1), (1, 1)])
def test_fit_on_line_and_point_scans(shape):
    truth = np.zeros((*shape, 2)) + CENTRE
    truth[..., 1] += np.linspace(0, 1, shape[0] * shape[1]).reshape(shape)
    field, inliers = align.fit_descan(truth)
    np.testing.assert_allclose(field, truth, atol=0.02)
    assert inliers.all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"order": 6}, "order=6 should be an integer between 0 and 5."),
        ({"order": 1.5}, "order=1.5 should be an integer between 0 and 5."),
        ({"smooth": -1.0}, "smooth=-1.0 should be a number >= 0."),
    ],
)
def test_fit_rejects_bad_arguments(kwargs, message):
    with pytest.raises(InputError, match=re.escape(message)):
        align.fit_descan(np.zeros((3, 3, 2)), **kwargs)


def test_fit_rejects_bad_shape():
    with pytest.raises(InputError, match=re.escape("centres.shape=(9, 2) should be (ny, nx, 2).")):
        align.fit_descan(np.zeros((9, 2)))


# ------------------------------------------------------------------------------ shifts
def test_shifts_are_centre_minus_reference_and_never_nan():
    centres = np.array([[10.0, 12.0], [np.nan, np.nan], [11.0, 13.0], [12.0, np.nan], [13.0, 10.0]])
    shifts = align.shifts_from_centres(centres, reference=(10.0, 10.0))
    assert shifts.dtype == np.float32 and shifts.shape == (5, 2)
    np.testing.assert_array_equal(shifts[[0, 2, 4]], [[0, 2], [1, 3], [3, 0]])
    np.testing.assert_array_equal(shifts[[1, 3]], [[1, 2], [1, 2]])  # the median shift


def test_shifts_fill_and_all_missing():
    centres = np.full((2, 3, 2), np.nan)
    np.testing.assert_array_equal(align.shifts_from_centres(centres, (5, 5)), np.zeros((6, 2)))
    filled = align.shifts_from_centres(centres, (5, 5), fill=(0.5, -0.5))
    np.testing.assert_array_equal(filled, np.tile([0.5, -0.5], (6, 1)))


def test_shifts_reject_bad_reference():
    with pytest.raises(InputError, match="reference=.* should be two finite numbers"):
        align.shifts_from_centres(np.zeros((3, 2)), reference=(1.0, np.nan))


@pytest.mark.parametrize("method", ["com", "xcorr", "fit"])
def test_descan_shifts(method):
    truth = _smooth_field(12, 14)
    measured, _, missing = _with_outliers(truth, fraction=0.05)
    shifts, info = align.descan_shifts(measured, method, reference=CENTRE)
    assert shifts.shape == (12 * 14, 2) and shifts.dtype == np.float32
    assert np.isfinite(shifts).all()
    assert info["method"] == method and info["n_measured"] == int((~missing).sum())
    if method == "fit":
        assert _rms(shifts.reshape(truth.shape) - (truth - CENTRE)) < 0.05
        assert info["n_inliers"] <= info["n_measured"] and info["residual_rms_px"] < 0.1
    else:
        np.testing.assert_allclose(
            shifts.reshape(truth.shape)[~missing], (measured - CENTRE)[~missing], atol=1e-5
        )


# ------------------------------------------------------------------------------ resolve_align
@pytest.mark.parametrize(
    ("value", "method"),
    [(None, None), (False, None), (True, align.DEFAULT_ALIGN_METHOD), ("com", "com"),
     ("XCorr", "xcorr"), (" fit ", "fit"), (" Auto", "auto")],
)
def test_resolve_align(value, method):
    assert align.resolve_align(value) == method


@pytest.mark.parametrize("value", ["peak", "", 1, 0, 1.0, ["com"]])
def test_resolve_align_rejects(value):
    message = f"align must be None, True, False or one of 'com', 'xcorr', 'fit', 'auto'; got {value!r}"
    with pytest.raises(InputError, match=re.escape(message)):
        align.resolve_align(value)


def test_default_method_is_known():
    assert align.DEFAULT_ALIGN_METHOD in align.ALIGN_METHODS


# ------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("method", ["com", "xcorr", "fit"])
def test_shifted_preprocessing_puts_every_beam_on_the_reference(method):
    """Measure, shift with the preprocessing kernel, measure again: beams sit on the reference."""
    ny, nx = 12, 13
    truth = _smooth_field(ny, nx, seed=4)
    raw = _patterns(truth.reshape(-1, 2), beam=200.0, background=0.0).astype(np.float32)
    measured = align.measure_centres(raw, "com" if method == "fit" else method,
                                     centre=CENTRE, radius=RADIUS)
    reference = (24.0, 24.0)
    shifts, _ = align.descan_shifts(measured.reshape(ny, nx, 2), method, reference)

    qy, qx = DETECTOR
    pixel_y, pixel_x = (a.ravel().astype(np.int32) for a in np.mgrid[0:qy, 0:qx])
    aligned = np.empty((ny * nx, qy * qx), np.float32)
    launch_preprocess_cpu(raw, shifts, pixel_y, pixel_x, pixel_math.TRANSFORM_NONE,
                          pixel_math.NORM_NONE, aligned)
    after = align.measure_centres(aligned.reshape(-1, qy, qx), "com", centre=reference,
                                  radius=RADIUS)
    # noise-free, worst pattern: com 0.03 px, xcorr 0.06 (its parabola's bias), fit 0.06 (a
    # 12 x 13 scan is coarse for the smoothing)
    assert np.abs(after - np.asarray(reference)).max() < 0.1
    before = np.abs(measured - np.asarray(reference)).max()
    assert before > 1.0  # the drift was real


# ------------------------------------------------------------------------------ synthetic scan
@pytest.fixture(scope="module")
def drifting_scan():
    synthetic = pytest.importorskip("gpu4d.synthetic")
    return synthetic.make_scan((24, 24), (96, 96), n_grains=3, drift_px=1.5, seed=7)


# measured rms: com 0.083 px, xcorr 0.064, fit 0.040
@pytest.mark.parametrize(("method", "limit"), [("com", 0.15), ("xcorr", 0.1), ("fit", 0.06)])
def test_synthetic_scan_centres(drifting_scan, method, limit):
    """Measured centres against the generator's truth, thickness gradient and all."""
    scan = drifting_scan
    ny, nx, qy, qx = scan.data.shape
    centre = ((qy - 1) / 2, (qx - 1) / 2)
    measured = align.measure_centres(
        scan.data.reshape(-1, qy, qx), method, centre=centre, radius=scan.beam_radius
    ).reshape(ny, nx, 2)
    if method == "fit":
        measured, _ = align.fit_descan(measured)
    assert _rms(measured - scan.beam_centres) < limit
