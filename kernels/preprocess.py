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
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import _targets, pixel_math

_read_cpu = _targets.for_cpu(pixel_math.read_pixel)
_bilinear_cpu = _targets.for_cpu(pixel_math.make_bilinear_pixel(_read_cpu))
_transform_cpu = _targets.for_cpu(pixel_math.transform_value)
_accumulate_cpu = _targets.for_cpu(pixel_math.norm_accumulate)
_scale_cpu = _targets.for_cpu(pixel_math.norm_scale)

@njit(parallel=True, cache=True)
def preprocess_cpu_kernel(raw, shifts, pixel_y, pixel_x, transform, norm, use_shifts, out):
    """CPU kernel: one pattern per parallel iteration, float64 running statistic."""
    n_kept = pixel_y.shape[0]
    for i in prange(raw.shape[0]):
        acc = 0.0
        for j in range(n_kept):
            if use_shifts:
                value = _bilinear_cpu(raw, i, pixel_y[j] + shifts[i, 0], pixel_x[j] + shifts[i, 1])
            else:
                value = _read_cpu(raw, i, pixel_y[j], pixel_x[j])
            value = _transform_cpu(value, transform)
            out[i, j] = value
            acc = _accumulate_cpu(acc, value, norm)
        scale = _scale_cpu(acc, norm)
        if scale != 1.0:
            for j in range(n_kept):
                out[i, j] = out[i, j] * scale


def launch_preprocess_cpu(raw, shifts, pixel_y, pixel_x, transform, norm, out):
    """Run the CPU kernel over a batch; ``shifts=None`` means no alignment."""
    use_shifts = shifts is not None
    if not use_shifts:
        shifts = np.zeros((1, 2), np.float32)
    preprocess_cpu_kernel(raw, shifts, pixel_y, pixel_x, transform, norm, use_shifts, out)
    return out
