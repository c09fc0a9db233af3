"""The CPU preprocessing kernel against a numpy float64 reference."""

import numpy as np
import pytest

from gpu4d.kernels.preprocess import launch_preprocess_cpu
from gpu4d.masks import build_mask, parse_mask
from gpu4d.preprocessing import NORMALIZATIONS, TRANSFORMS

from .reference import preprocess_reference, random_patterns

# float32 output against a float64 reference
RTOL, ATOL = 2e-6, 1e-6


def run_cpu(raw, masked, transform, normalize, shifts=None):
    ys, xs = (a.astype(np.int32) for a in np.nonzero(~masked))
    out = np.full((raw.shape[0], ys.size), np.nan, np.float32)
    launch_preprocess_cpu(raw, shifts, ys, xs, TRANSFORMS[transform], NORMALIZATIONS[normalize], out)
    return out


def disc_mask(shape, centre, radius):
    return build_mask(parse_mask((*centre, radius)), shape).masked


@pytest.mark.parametrize("transform", list(TRANSFORMS))
@pytest.mark.parametrize("normalize", list(NORMALIZATIONS))
def test_every_option_matches_reference(transform, normalize):
    rng = np.random.default_rng(3)
    raw = random_patterns(rng, 23, (13, 11), np.uint16)
    masked = disc_mask((13, 11), (6.2, 5.1), 2.5)
    got = run_cpu(raw, masked, transform, normalize)
    want = preprocess_reference(raw, masked, transform, normalize)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.float32, np.float64, np.int32])
@pytest.mark.parametrize("n", [1, 97])
def test_dtypes_and_odd_sizes(dtype, n):
    rng = np.random.default_rng(n)
    raw = random_patterns(rng, n, (17, 9), dtype)
    masked = disc_mask((17, 9), (8, 4), 3)
    got = run_cpu(raw, masked, "sqrt", "max")
    np.testing.assert_allclose(got, preprocess_reference(raw, masked, "sqrt", "max"), rtol=RTOL, atol=ATOL)


def test_all_zero_after_masking_gives_zeros_not_nan():
    raw = np.zeros((4, 9, 9), np.uint8)
    raw[:, 4, 4] = 255  # only the beam, which the mask removes
    masked = disc_mask((9, 9), (4, 4), 1.5)
    for normalize in NORMALIZATIONS:
        got = run_cpu(raw, masked, "log1p", normalize)
        assert np.isfinite(got).all() and not got.any()


def test_negative_values_count_as_zero_for_sqrt_and_log():
    raw = np.array([[[-4.0, 9.0], [0.0, 16.0]]], np.float32)
    masked = np.zeros((2, 2), bool)
    np.testing.assert_allclose(run_cpu(raw, masked, "sqrt", "none"), [[0, 3, 0, 4]])
    # max normalization uses |value|, as sklearn.preprocessing.normalize(norm="max") does
    np.testing.assert_allclose(run_cpu(raw, masked, "none", "max"), [[-0.25, 9 / 16, 0, 1]])


def test_sub_pixel_shifts_match_bilinear_reference():
    rng = np.random.default_rng(5)
    raw = random_patterns(rng, 31, (15, 12), np.uint16)
    shifts = rng.uniform(-2.5, 2.5, (31, 2)).astype(np.float32)
    shifts[0] = 0  # no shift must reproduce the plain read
    shifts[2] = (1, -2)  # integer shift
    masked = disc_mask((15, 12), (7, 6), 2)
    got = run_cpu(raw, masked, "none", "l2", shifts)
    want = preprocess_reference(raw, masked, "none", "l2", shifts.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[0], run_cpu(raw[:1], masked, "none", "l2")[0], rtol=1e-6)


def test_matches_sklearn_normalize():
    from sklearn.preprocessing import normalize

    rng = np.random.default_rng(11)
    raw = random_patterns(rng, 40, (12, 12), np.uint8)
    masked = disc_mask((12, 12), (6, 6), 2)
    values = raw.reshape(40, -1)[:, ~masked.ravel()].astype(np.float64)
    for ours, theirs in (("max", "max"), ("l2", "l2"), ("sum", "l1")):
        np.testing.assert_allclose(
            run_cpu(raw, masked, "none", ours), normalize(values, norm=theirs), rtol=RTOL, atol=ATOL
        )


@pytest.mark.parametrize("transform", ["none", "log1p"])
def test_shifts_reaching_past_every_edge_match_reference(transform):
    # runs that cross the detector edge mix the vectorized interior with edge samples
    rng = np.random.default_rng(8)
    raw = random_patterns(rng, 40, (21, 26), np.uint8)
    shifts = rng.uniform(-7, 7, (40, 2)).astype(np.float32)
    shifts[:4] = [(-21.5, 0.2), (0.3, 26.5), (0.5, -0.5), (-1.0, 25.0)]
    radius = np.hypot(*(np.indices((21, 26)) - np.array([10.3, 12.7])[:, None, None]))
    masked = (radius < 3) | (radius > 8)  # keep an annulus: two runs on most rows
    got = run_cpu(raw, masked, transform, "sum", shifts)
    want = preprocess_reference(raw, masked, transform, "sum", shifts.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_pixel_runs_cover_the_kept_pixels_in_order():
    from gpu4d.kernels.preprocess import pixel_runs

    rng = np.random.default_rng(2)
    masked = rng.random((19, 23)) < 0.4
    ys, xs = np.nonzero(~masked)
    runs = pixel_runs(ys, xs)
    rebuilt = [(y, x + t) for y, x, length, _ in runs for t in range(length)]
    assert rebuilt == list(zip(ys.tolist(), xs.tolist()))
    assert (runs[:, 3] == np.concatenate(([0], np.cumsum(runs[:-1, 2])))).all()
    assert pixel_runs(np.array([], np.int32), np.array([], np.int32)).shape == (0, 4)
