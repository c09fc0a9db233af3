"""Gaussian blur of a batch of patterns over the detector, on the CPU (before the transform).

Why: at low dose a weak diffraction spot is a few counts spread over the pixels of its
profile; the square root of a pixel's 0, 1 or 2 counts says little, the square root of the
counts pooled over the spot says more. Blurring each pattern by about the spot's width first
is the matched filter for a spot (``gpu4d.defaults.BLUR_PER_DETECTOR_PX`` says how it was
chosen). Summing before the square root is what helps: the same blur after it found none of
the weak regions it finds before.

``blur_cpu`` computes the kernel's two axes as two passes of contiguous multiply-adds (SIMD);
the CUDA twin (``kernels.blur_cuda``) sums pixel by pixel with the shared
``pixel_math.blurred_pixel``. Both: zero outside the detector, float32 results.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import njit, prange

#: The kernel reaches this many sigmas (at least one pixel): 99.7% of a Gaussian's weight.
TRUNCATE = 2.0


@functools.cache
def gaussian_taps(sigma: float) -> np.ndarray:
    """(2r + 1,) float32 weights of a Gaussian of ``sigma`` px summing to 1, r = ceil(3 sigma).
    Cached: one array object per sigma (device copies are cached by object)."""
    radius = max(1, int(math.ceil(TRUNCATE * sigma)))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    taps = (weights / weights.sum()).astype(np.float32)
    taps.setflags(write=False)
    return taps


@njit(parallel=True, fastmath=True, cache=True)
def blur_cpu_kernel(raw, taps, out, n_threads):
    """``out[i]`` = ``raw[i]`` (n, qy, qx, any real dtype) blurred by ``taps`` along both axes.
    The patterns are shared out in one block per thread, each with its own work rows."""
    n, qy, qx = raw.shape
    r = (taps.shape[0] - 1) // 2
    width = taps.shape[0]
    n_blocks = max(1, min(n, n_threads))
    for block in prange(n_blocks):
        padded_row = np.zeros(qx + 2 * r, np.float32)  # zeros beyond the detector's edges
        across = np.zeros((qy + 2 * r, qx), np.float32)  # rows blurred along x, padded in y
        for i in range(block * n // n_blocks, (block + 1) * n // n_blocks):
            for y in range(qy):
                source = raw[i, y]
                for x in range(qx):
                    padded_row[x + r] = np.float32(source[x])
                target = across[y + r]
                w = taps[0]
                for x in range(qx):
                    target[x] = w * padded_row[x]
                for t in range(1, width):
                    w = taps[t]
                    for x in range(qx):
                        target[x] += w * padded_row[x + t]
            result = out[i]
            for y in range(qy):
                target = result[y]
                w = taps[0]
                source = across[y]
                for x in range(qx):
                    target[x] = w * source[x]
                for t in range(1, width):
                    w = taps[t]
                    source = across[y + t]
                    for x in range(qx):
                        target[x] += w * source[x]


def blur_cpu(raw, taps, out):
    """Blur a batch (n, qy, qx) into ``out`` (n, qy, qx) float32; returns ``out``."""
    if raw.shape[0]:
        blur_cpu_kernel(raw, taps, out, numba.get_num_threads())
    return out
