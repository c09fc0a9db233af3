"""Fused preprocessing of a batch of patterns on the CPU: align, mask, transform, normalize.

The CUDA twin is ``kernels.preprocess_cuda``; both share ``kernels.pixel_math``.

Each output row holds the kept (unmasked) pixels of one pattern, in the order given by
``pixel_y``/``pixel_x``: masked pixels are dropped from the feature matrix altogether, which
is exactly equivalent to zeroing them for KMeans and saves their memory and flops.

Inputs of both kernels
----------------------
raw : (n, qy, qx) uint8, uint16, uint32, float32 or float64
    Raw patterns, converted to float on the fly.
shifts : (n, 2) float32
    Per-pattern (dy, dx) of the direct beam from the reference centre; pattern i is sampled at
    (y + dy, x + dx) so every beam lands on the reference. Ignored when ``use_shifts`` is False.
pixel_y, pixel_x : (m,) int32
    Detector coordinates of the kept pixels.
transform, norm : int
    Codes from ``kernels.pixel_math``.
out : (n, m) float32
    Feature rows, written in place.

The CPU kernel walks the kept pixels as *runs*: stretches of consecutive pixels of one
detector row. A beam mask leaves at most a few runs per row, so the inner loops read and write
contiguous memory and compile to SIMD code (a per-pixel gather ran about 5x slower).
``peak_scaled_cpu_kernel`` is the same computation for the commonest case (unsigned patterns,
no shifts, max normalization) in fewer sweeps over each row; the CUDA kernel needs no such
twin, as it reduces each pattern in a block of threads whatever the case.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import _targets, pixel_math

_read_cpu = _targets.for_cpu(pixel_math.read_pixel)
_bilinear_cpu = _targets.for_cpu(pixel_math.make_bilinear_pixel(_read_cpu))
_transform_cpu = _targets.for_cpu(pixel_math.transform_value)
_accumulate_cpu = _targets.for_cpu(pixel_math.norm_accumulate)
_scale_cpu = _targets.for_cpu(pixel_math.norm_scale)


def pixel_runs(pixel_y: np.ndarray, pixel_x: np.ndarray) -> np.ndarray:
    """(r, 4) int32 runs ``(y, x_start, length, out_start)`` covering the kept pixels in order."""
    pixel_y = np.asarray(pixel_y, np.int64)
    pixel_x = np.asarray(pixel_x, np.int64)
    if pixel_y.size == 0:
        return np.zeros((0, 4), np.int32)
    breaks = np.flatnonzero((np.diff(pixel_y) != 0) | (np.diff(pixel_x) != 1)) + 1
    starts = np.concatenate(([0], breaks))
    lengths = np.diff(np.concatenate((starts, [pixel_y.size])))
    return np.stack([pixel_y[starts], pixel_x[starts], lengths, starts], axis=1).astype(np.int32)


@njit(inline="always", cache=True)
def _copy_run(raw, i, y, x, length, row, dst):
    source = raw[i, y, x : x + length]
    target = row[dst : dst + length]
    for t in range(length):
        target[t] = source[t]


@njit(inline="always", cache=True)
def _shifted_run(raw, i, y, x, length, dy, dx, row, dst):
    """Bilinear samples of a run at (y + dy, x + dx): contiguous reads where all four
    neighbours lie on the detector, the shared per-pixel function at the edges."""
    qy, qx = raw.shape[1], raw.shape[2]
    fy = y + dy
    y0 = int(math.floor(fy))
    wy = np.float32(fy - y0)
    fx0 = x + dx
    x0 = int(math.floor(fx0))
    wx = np.float32(fx0 - x0)
    # samples t in [inner_start, inner_stop) have all four neighbours on the detector
    inner_start, inner_stop = 0, 0
    if y0 >= 0 and y0 + 1 < qy:
        inner_start = min(max(0, -x0), length)
        inner_stop = max(min(length, qx - 1 - x0), inner_start)
    for t in range(inner_start):
        row[dst + t] = _bilinear_cpu(raw, i, fy, fx0 + t)
    if inner_stop > inner_start:
        a = np.float32(1.0) - wx
        b = np.float32(1.0) - wy
        upper = raw[i, y0, x0 + inner_start : x0 + inner_stop + 1]
        lower = raw[i, y0 + 1, x0 + inner_start : x0 + inner_stop + 1]
        target = row[dst + inner_start : dst + inner_stop]
        for t in range(inner_stop - inner_start):
            top = a * np.float32(upper[t]) + wx * np.float32(upper[t + 1])
            bottom = a * np.float32(lower[t]) + wx * np.float32(lower[t + 1])
            target[t] = b * top + wy * bottom
    for t in range(inner_stop, length):
        row[dst + t] = _bilinear_cpu(raw, i, fy, fx0 + t)


@njit(inline="always", cache=True)
def transform_and_normalize_row(row, transform, norm):
    """A feature row's values transformed, then scaled by its normalization, in place."""
    n_kept = row.shape[0]
    if transform != pixel_math.TRANSFORM_NONE:
        for j in range(n_kept):
            row[j] = _transform_cpu(row[j], transform)
    if norm == pixel_math.NORM_NONE:
        return
    acc = 0.0
    for j in range(n_kept):
        acc = _accumulate_cpu(acc, row[j], norm)
    scale = np.float32(_scale_cpu(acc, norm))
    for j in range(n_kept):
        row[j] *= scale


@njit(parallel=True, fastmath=True, cache=True)
def preprocess_cpu_kernel(raw, shifts, runs, transform, norm, use_shifts, out):
    """CPU kernel: one pattern per parallel iteration, run by run, then transform and scale."""
    for i in prange(raw.shape[0]):
        row = out[i]
        for r in range(runs.shape[0]):
            y, x, length, dst = runs[r, 0], runs[r, 1], runs[r, 2], runs[r, 3]
            if use_shifts:
                _shifted_run(raw, i, y, x, length, shifts[i, 0], shifts[i, 1], row, dst)
            else:
                _copy_run(raw, i, y, x, length, row, dst)
        transform_and_normalize_row(row, transform, norm)


@njit(inline="always", cache=True)
def _copy_run_peak(raw, i, y, x, length, row, dst, peak):
    """``_copy_run``, returning the larger of ``peak`` and the run's largest raw value."""
    source = raw[i, y, x : x + length]
    target = row[dst : dst + length]
    for t in range(length):
        value = source[t]
        target[t] = value
        peak = max(peak, value)
    return peak


@njit(parallel=True, fastmath=True, cache=True)
def peak_scaled_cpu_kernel(raw, runs, transform, out):
    """CPU kernel for unsigned patterns, no shifts, max normalization (the defaults on
    counting detectors): the same rows as ``preprocess_cpu_kernel``, in two sweeps instead of
    four.

    The transforms never decrease, so the largest transformed value is the transform of the
    largest raw one, and |value| is value for unsigned data. That maximum is taken on the raw
    integers while they are copied (a float maximum does not compile to SIMD code, an integer
    one does), and the transform and the scaling share one sweep: 2x faster on 144x144 uint8
    patterns, the same float32 values.
    """
    n_kept = out.shape[1]
    for i in prange(raw.shape[0]):
        row = out[i]
        peak = raw.dtype.type(0)
        for r in range(runs.shape[0]):
            peak = _copy_run_peak(raw, i, runs[r, 0], runs[r, 1], runs[r, 2], row, runs[r, 3], peak)
        top = _transform_cpu(np.float32(peak), transform)
        scale = np.float32(_scale_cpu(np.float64(top), pixel_math.NORM_MAX))
        for j in range(n_kept):
            row[j] = np.float32(_transform_cpu(row[j], transform)) * scale


def launch_preprocess_cpu(raw, shifts, pixel_y, pixel_x, transform, norm, out, runs=None):
    """Run the CPU kernel over a batch; ``shifts=None`` means no alignment.

    ``runs`` (from ``pixel_runs(pixel_y, pixel_x)``) may be passed to skip recomputing them.
    """
    use_shifts = shifts is not None
    if runs is None:
        runs = pixel_runs(pixel_y, pixel_x)
    if not use_shifts and norm == pixel_math.NORM_MAX and raw.dtype.kind == "u":
        peak_scaled_cpu_kernel(raw, runs, transform, out)
        return out
    if not use_shifts:
        shifts = np.zeros((1, 2), np.float32)
    preprocess_cpu_kernel(raw, shifts, runs, transform, norm, use_shifts, out)
    return out
