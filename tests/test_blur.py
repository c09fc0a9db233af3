"""The detector blur (``gpu4d.blur``, ``kernels.blur``): the CPU kernel against scipy's
correlation in float64, the option, the features it makes, what results record and classify
reuses, and the low-dose map it exists for (a benchmark scan, wrong without it).

The CUDA twin is checked against this kernel in ``tests/cudasim/test_blur_cuda.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import gpu4d
from gpu4d.backend import get_backend
from gpu4d.blur import blur_sigma, parse_blur
from gpu4d.kernels import pixel_math
from gpu4d.kernels.blur import blur_cpu, gaussian_taps
from gpu4d.synthetic import make_scan

from .reference import blur_patterns, preprocess_reference, shift_patterns

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from quality import catalogue  # noqa: E402

#: float32 sums of at most 13 x 13 products against float64: relative round-off.
RTOL = 2e-6


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("sigma, shape", [(0.5, (7, 9)), (1.125, (13, 11)), (2.0, (20, 31))])
def test_blur_kernel_matches_scipy(dtype, sigma, shape):
    rng = np.random.default_rng(int(sigma * 8))
    raw = rng.poisson(3.0, (5, *shape)).astype(dtype)
    raw[1] = 0
    raw[2, 0, 0] = raw[2, -1, -1] = 200  # corners: the zero padding
    if np.dtype(dtype).kind == "f":
        raw -= 1.5  # dark-subtracted data: negative values blur as they are
    out = np.full(raw.shape, np.nan, np.float32)
    blur_cpu(raw, gaussian_taps(sigma), out)
    expected = blur_patterns(raw, sigma)
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=RTOL * np.abs(expected).max())


def test_blur_kernel_on_one_pattern_and_a_strided_batch():
    raw = np.random.default_rng(3).poisson(2.0, (6, 12, 10)).astype(np.uint16)[::2]  # strided
    out = np.empty(raw.shape, np.float32)
    blur_cpu(raw, gaussian_taps(1.0), out)
    np.testing.assert_allclose(out, blur_patterns(raw, 1.0), rtol=RTOL, atol=1e-5)
    one = np.empty((1, 12, 10), np.float32)
    blur_cpu(raw[:1], gaussian_taps(1.0), one)
    np.testing.assert_array_equal(one, out[:1])


def test_gaussian_taps():
    for sigma, radius in ((0.5, 2), (1.0, 3), (1.125, 4), (2.0, 6)):  # ceil(3 sigma)
        taps = gaussian_taps(sigma)
        assert taps.dtype == np.float32 and taps.shape == (2 * radius + 1,)
        assert abs(float(taps.sum(dtype=np.float64)) - 1.0) < 1e-6
        np.testing.assert_array_equal(taps, taps[::-1])
        assert taps.argmax() == radius
        offsets = np.arange(-radius, radius + 1)
        # the variance of the truncated kernel is that of the Gaussian within the truncation
        assert sigma**2 * 0.8 < float((taps * offsets**2).sum()) <= sigma**2
    assert gaussian_taps(1.0) is gaussian_taps(1.0)  # one object per sigma: device copies are cached by it


def test_parse_blur_and_the_auto_sigma():
    assert parse_blur("auto") == "auto"
    assert parse_blur("none") == parse_blur(0) == parse_blur(None) == parse_blur(False) == 0.0
    assert parse_blur("1.5") == parse_blur(1.5) == 1.5
    assert blur_sigma("auto", (64, 64)) == 0.5
    assert blur_sigma("auto", (256, 256)) == 2.0
    assert blur_sigma("auto", (128, 256)) == 2.0  # a detector ROI: the larger side
    assert blur_sigma(0.75, (256, 256)) == 0.75


@pytest.mark.parametrize("value", [-1, "sharp", True, 100, float("nan")])
def test_a_bad_blur_is_refused_by_name(value):
    with pytest.raises(gpu4d.InputError, match="blur="):
        gpu4d.cluster(np.ones((4, 4, 8, 8), np.uint8), 2, blur=value)


def test_features_are_the_blurred_patterns_preprocessed():
    """The backend's rows with taps equal the reference preprocessing of scipy-blurred
    patterns: blur first, then mask, sqrt and max normalization."""
    rng = np.random.default_rng(5)
    raw = rng.poisson(1.0, (7, 16, 16)).astype(np.uint8)
    keep = np.ones((16, 16), bool)
    keep[6:10, 6:10] = False
    py, px = (a.astype(np.int32) for a in np.nonzero(keep))
    out = np.empty((7, py.size), np.float32)
    backend = get_backend("cpu")
    backend.preprocess(raw, None, py, px, pixel_math.TRANSFORM_SQRT, pixel_math.NORM_MAX, out, taps=gaussian_taps(1.0))
    expected = preprocess_reference(raw, ~keep, "sqrt", "max", blur_px=1.0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    plain = np.empty_like(out)
    backend.preprocess(raw, None, py, px, pixel_math.TRANSFORM_SQRT, pixel_math.NORM_MAX, plain)
    assert not np.allclose(plain, out, atol=1e-3)


def test_blur_zeroes_masked_pixels_first_and_aligns_like_the_preprocess_kernel():
    """With a mask and shifts, the blur sees the aligned pattern (bilinear, as the preprocess
    kernel samples it) with its masked pixels zeroed: nothing masked leaks into kept pixels."""
    rng = np.random.default_rng(11)
    raw = rng.poisson(2.0, (4, 15, 14)).astype(np.uint16)
    raw[:, 6:9, 6:9] = 5000  # a bright beam under the mask
    keep = np.ones((15, 14), bool)
    keep[5:10, 5:10] = False
    shifts = rng.uniform(-1.5, 1.5, (4, 2)).astype(np.float32)
    py, px = (a.astype(np.int32) for a in np.nonzero(keep))
    for use_shifts in (False, True):
        out = np.empty(raw.shape, np.float32)
        blur_cpu(raw, gaussian_taps(1.0), out, shifts=shifts if use_shifts else None,
                 keep=keep.astype(np.float32))
        aligned = shift_patterns(raw, shifts.astype(np.float64)) if use_shifts else raw.astype(np.float64)
        expected = blur_patterns(np.where(keep, aligned, 0.0), 1.0)
        np.testing.assert_allclose(out, expected, rtol=RTOL, atol=RTOL * expected.max())
        assert out[:, ~keep].max() < 2000  # the 5,000-count beam did not leak
        # and through the backend: the features of the kept pixels
        rows = np.empty((4, py.size), np.float32)
        get_backend("cpu").preprocess(
            raw, shifts if use_shifts else None, py, px, pixel_math.TRANSFORM_SQRT, pixel_math.NORM_MAX, rows,
            taps=gaussian_taps(1.0),
        )
        reference = preprocess_reference(raw, ~keep, "sqrt", "max", shifts.astype(np.float64) if use_shifts else None, 1.0)
        np.testing.assert_allclose(rows, reference, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def small_scan():
    return make_scan((14, 15), (32, 32), n_grains=3, defect=False, seed=4, dose=400, dtype="uint16")


def test_results_record_the_blur_and_classify_reuses_it(small_scan, tmp_path):
    data = small_scan.data
    result = gpu4d.cluster(data, 3)
    assert result.parameters["blur"] == "auto" and result.parameters["blur_px"] == 0.25
    folder = result.save(tmp_path / "model", figures=False)
    model = gpu4d.load_result(folder)
    assert model.parameters["blur_px"] == 0.25
    # the model's own scan gets the model's labels back: its features are blurred as the model's were
    np.testing.assert_array_equal(gpu4d.classify(model, data).labels, result.labels)
    none = gpu4d.cluster(data, 3, blur="none")
    assert none.parameters["blur"] == 0.0 and none.parameters["blur_px"] == 0.0
    # different features, different centroids: the option took effect
    assert not np.allclose(none.centroids, result.centroids, atol=1e-3)


def test_a_model_made_without_blur_classifies_without_it(small_scan, tmp_path):
    """Models saved before gpu4d blurred record no ``blur_px``: they classify unblurred, as
    their centroids were made."""
    result = gpu4d.cluster(small_scan.data, 3, blur=0)
    folder = result.save(tmp_path / "model", figures=False)
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text())
    for key in ("blur", "blur_px"):
        summary["parameters"].pop(key)
    summary_path.write_text(json.dumps(summary))
    model = gpu4d.load_result(folder)
    assert "blur_px" not in model.parameters
    np.testing.assert_array_equal(gpu4d.classify(model, small_scan.data).labels, result.labels)


def test_cli_blur_option(small_scan, tmp_path, run_cli):
    path = tmp_path / "scan.npy"
    np.save(path, small_scan.data)
    out = tmp_path / "out"
    run = run_cli("cluster", path, "-k", 3, "--out", out, "--no-figures", "-q", "--blur", "0.8")
    assert run.code == 0, run.err
    parameters = json.loads((out / "summary.json").read_text())["parameters"]
    assert parameters["blur"] == 0.8 and parameters["blur_px"] == 0.8
    bad = tmp_path / "bad"
    run = run_cli("cluster", path, "-k", 3, "--out", bad, "--no-figures", "-q", "--blur", "-2")
    assert run.code != 0 and "blur=" in run.err
    assert not bad.exists()


def test_the_low_dose_twin_lamella_is_found_with_the_blur_and_lost_without():
    """bench_quality.py's syn-three-h (held out from the tuning): 3 regions on a 128-px
    detector at ~500 counts per pattern (uint8), one a twin lamella of 5% of the patterns
    carrying a quarter of its own spots. Measured 2026-12-01: ARI 0.99 with the default blur,
    0.89 without (the lamella merged into its host, the thick end of a grain split off)."""
    spec = next(s for s in catalogue.SCANS if s.name == "syn-three-h")
    data, truth, _ = catalogue.generate(spec)
    k = int(truth.max()) + 1
    blurred = gpu4d.cluster(data, k)
    plain = gpu4d.cluster(data, k, blur="none")
    assert adjusted_rand_score(truth.ravel(), blurred.labels.ravel()) >= 0.95
    assert adjusted_rand_score(truth.ravel(), plain.labels.ravel()) < 0.95


@pytest.mark.parametrize("transform, normalize", [("sqrt", "max"), ("none", "l2"), ("log1p", "sum"), ("sqrt", "none")])
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_blurred_features_for_every_transform_and_normalization(transform, normalize, dtype):
    from gpu4d.preprocessing import NORMALIZATIONS, TRANSFORMS

    rng = np.random.default_rng(21)
    raw = rng.poisson(2.0, (5, 12, 13)).astype(dtype)
    raw[1] = 0  # an empty pattern gives zeros, never NaN
    if np.dtype(dtype).kind == "f":
        raw -= 1.0  # dark-subtracted: negative blurred values count as 0 under the transforms
    keep = np.ones((12, 13), bool)
    keep[4:8, 5:9] = False
    py, px = (a.astype(np.int32) for a in np.nonzero(keep))
    rows = np.empty((5, py.size), np.float32)
    get_backend("cpu").preprocess(raw, None, py, px, TRANSFORMS[transform], NORMALIZATIONS[normalize], rows,
                                  taps=gaussian_taps(0.9))
    expected = preprocess_reference(raw, ~keep, transform, normalize, blur_px=0.9)
    np.testing.assert_allclose(rows, expected, rtol=1e-5, atol=1e-6)
    assert np.isfinite(rows).all()
