"""Independent numpy float64 references for the preprocessing kernels."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def shift_patterns(raw: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Sample each pattern at (y + dy, x + dx), bilinear, zero outside: (n, qy, qx) float64.

    Pixels outside the detector count as zeros in the interpolation (a zero-padded detector).
    """
    out = np.empty(raw.shape, np.float64)
    yy, xx = np.indices(raw.shape[1:], dtype=np.float64)
    for i, (dy, dx) in enumerate(shifts):
        padded = np.pad(raw[i].astype(np.float64), 1)
        out[i] = ndimage.map_coordinates(
            padded, [yy + dy + 1, xx + dx + 1], order=1, mode="constant", cval=0.0
        )
    return out


def blur_patterns(raw: np.ndarray, sigma: float) -> np.ndarray:
    """Each pattern correlated with the outer product of ``gaussian_taps(sigma)`` in float64,
    zero beyond the detector (scipy): (n, qy, qx) float64."""
    from gpu4d.kernels.blur import gaussian_taps

    taps = gaussian_taps(sigma).astype(np.float64)
    kernel = np.outer(taps, taps)
    return np.stack([ndimage.correlate(p.astype(np.float64), kernel, mode="constant", cval=0.0) for p in raw])


def preprocess_reference(raw, masked, transform, normalize, shifts=None, blur_px=0.0) -> np.ndarray:
    """Feature rows (n, n_kept) float64: align, drop masked pixels (zeroed first and the
    patterns blurred over the detector when ``blur_px`` > 0), transform, normalize."""
    patterns = raw.astype(np.float64) if shifts is None else shift_patterns(raw, shifts)
    if blur_px:
        patterns = blur_patterns(np.where(masked, 0.0, patterns), blur_px)
    values = patterns[:, ~masked]
    if transform == "sqrt":
        values = np.sqrt(np.clip(values, 0, None))
    elif transform == "log1p":
        values = np.log1p(np.clip(values, 0, None))
    if normalize == "none":
        return values
    stat = {
        "max": np.abs(values).max(axis=1),
        "l2": np.sqrt((values**2).sum(axis=1)),
        "sum": np.abs(values).sum(axis=1),
    }[normalize]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(stat[:, None] > 0, values / stat[:, None], 0.0)


def random_patterns(rng, n, shape, dtype) -> np.ndarray:
    """Spotty random patterns of a dtype, with some all-zero patterns."""
    raw = rng.poisson(3.0, (n, *shape)).astype(np.float64)
    raw[:, rng.integers(0, shape[0], 5), rng.integers(0, shape[1], 5)] += 200
    if n > 2:
        raw[1] = 0  # an all-zero pattern must give zeros, never NaN
    if np.dtype(dtype).kind == "f":
        raw = raw * 0.37
    return raw.astype(dtype)
