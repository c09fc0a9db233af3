"""Gaussian blur of a batch of patterns over the detector, on the CPU (before the transform).

Why: at low dose a weak diffraction spot is a few counts spread over the pixels of its
profile; the square root of a pixel's 0, 1 or 2 counts says little, the square root of the
counts pooled over the spot says more (``gpu4d.blur`` says how the width was chosen).

What is blurred is the pattern as the features see it: aligned onto the reference beam (the
preprocess kernel's bilinear sampling) and with its masked pixels (the direct beam, bad
pixels) zeroed, so that no masked intensity leaks into the kept pixels. The same kernel then
gathers, transforms and normalizes the kept pixels of the blurred frame (as
``kernels.preprocess`` does), from a per-thread frame that stays in the cache.

``blur_preprocess_cpu`` computes the kernel's two axes as two passes of contiguous multiply-adds (SIMD);
the CUDA twin (``kernels.blur_cuda``) sums pixel by pixel with the shared
``pixel_math.make_blurred_pixel_f32``. Both: zero outside the detector, float32 results.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import njit, prange

from . import pixel_math
from .preprocess import _shifted_run, pixel_runs, transform_and_normalize_row

#: The kernel reaches this many sigmas (at least one pixel): 99.7% of a Gaussian's weight.
TRUNCATE = 3.0


@functools.cache
def gaussian_taps(sigma: float) -> np.ndarray:
    """(2r + 1,) float32 weights of a Gaussian of ``sigma`` px summing to 1, r = ceil(3 sigma).
    Cached: one array object per sigma (device copies are cached by object); never write to it."""
    radius = max(1, int(math.ceil(TRUNCATE * sigma)))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    # not made read-only, though shared: numba's CUDA simulator copies every host argument
    # back after a launch, and a read-only one fails there before any real error surfaces
    return (weights / weights.sum()).astype(np.float32)


@njit(parallel=True, fastmath=True, cache=True)
def blur_preprocess_cpu_kernel(raw, shifts, use_shifts, keep, taps, runs, transform, norm, out, n_threads):
    """Feature rows of blurred patterns: pattern i aligned (sampled at its ``shifts``, if
    ``use_shifts``), its masked pixels (``keep`` 0) zeroed, blurred by ``taps`` along both
    axes, then its kept pixels (``runs``, as ``kernels.preprocess``) transformed and normalized
    into ``out[i]``. The blurred frame stays in a per-thread buffer (cache-resident): no batch
    of float32 frames goes through memory. One block of patterns per thread."""
    n, qy, qx = raw.shape
    r = (taps.shape[0] - 1) // 2
    width = taps.shape[0]
    n_kept = out.shape[1]
    n_blocks = max(1, min(n, n_threads))
    for block in prange(n_blocks):
        padded_row = np.zeros(qx + 2 * r, np.float32)  # zeros beyond the detector's edges
        across = np.zeros((qy + 2 * r, qx), np.float32)  # rows blurred along x, padded in y
        frame = np.empty((qy, qx), np.float32)
        for i in range(block * n // n_blocks, (block + 1) * n // n_blocks):
            for y in range(qy):
                if use_shifts:  # the aligned row: the preprocess kernel's bilinear sampling
                    _shifted_run(raw, i, y, 0, qx, shifts[i, 0], shifts[i, 1], padded_row, r)
                    for x in range(qx):
                        padded_row[x + r] *= keep[y, x]
                else:
                    source = raw[i, y]
                    for x in range(qx):
                        padded_row[x + r] = keep[y, x] * np.float32(source[x])
                target = across[y + r]
                w = taps[0]
                for x in range(qx):
                    target[x] = w * padded_row[x]
                for t in range(1, width):
                    w = taps[t]
                    for x in range(qx):
                        target[x] += w * padded_row[x + t]
            for y in range(qy):
                target = frame[y]
                w = taps[0]
                source = across[y]
                for x in range(qx):
                    target[x] = w * source[x]
                for t in range(1, width):
                    w = taps[t]
                    source = across[y + t]
                    for x in range(qx):
                        target[x] += w * source[x]
            row = out[i]
            if transform == pixel_math.TRANSFORM_SQRT and norm == pixel_math.NORM_MAX:
                # the defaults in two sweeps, as kernels.preprocess's peak-scaled kernel: the
                # blurred values are >= 0 where the patterns are, so the peak of the square
                # roots is the square root of the peak (a negative blurred value reads 0)
                peak = np.float32(0.0)
                for k in range(runs.shape[0]):
                    y, x, length, dst = runs[k, 0], runs[k, 1], runs[k, 2], runs[k, 3]
                    for t in range(length):
                        value = max(frame[y, x + t], np.float32(0.0))
                        row[dst + t] = value
                        peak = max(peak, value)
                scale = np.float32(1.0) / np.float32(math.sqrt(peak)) if peak > 0 else np.float32(0.0)
                for j in range(n_kept):
                    row[j] = np.float32(math.sqrt(row[j])) * scale
                continue
            for k in range(runs.shape[0]):
                y, x, length, dst = runs[k, 0], runs[k, 1], runs[k, 2], runs[k, 3]
                for t in range(length):
                    row[dst + t] = frame[y, x + t]
            transform_and_normalize_row(row, transform, norm)


def kept_grid(pixel_y, pixel_x, detector_shape, xp=np):
    """(qy, qx) float32 array of ``xp`` (numpy, or CuPy for device pixel lists): 1 at the kept
    pixels, 0 at the masked ones."""
    keep = xp.zeros(detector_shape, np.float32)
    keep[pixel_y, pixel_x] = 1.0
    return keep


def blur_preprocess_cpu(raw, taps, runs, transform, norm, out, *, shifts=None, keep=None):
    """Feature rows (n, m) of a batch (n, qy, qx), blurred first (see the kernel); ``keep``
    (qy, qx) float32, 1 at the kept pixels (None: all); returns ``out``."""
    if raw.shape[0]:
        use_shifts = shifts is not None
        if keep is None:
            keep = np.ones(raw.shape[1:], np.float32)
        if not use_shifts:
            shifts = np.zeros((1, 2), np.float32)
        blur_preprocess_cpu_kernel(
            raw, shifts, use_shifts, keep, taps, runs, transform, norm, out, numba.get_num_threads()
        )
    return out


def blur_cpu(raw, taps, out, *, shifts=None, keep=None):
    """Blur a batch (n, qy, qx) into ``out`` (n, qy, qx) float32 after aligning it by
    ``shifts`` (n, 2) (None: as it is) and zeroing the pixels where ``keep`` is 0 (None: keep
    every pixel); returns ``out``. Zero outside the detector. (The kernel above with every
    pixel kept, no transform and no normalization.)"""
    qy, qx = raw.shape[1:]
    every = pixel_runs(*np.indices((qy, qx)).reshape(2, -1))  # one run per detector row
    blur_preprocess_cpu(
        raw, taps, every, pixel_math.TRANSFORM_NONE, pixel_math.NORM_NONE, out.reshape(raw.shape[0], qy * qx),
        shifts=shifts, keep=keep,
    )
    return out
