"""Per-pixel math shared by the CPU and CUDA preprocessing kernels.

Plain functions of scalars, compiled for each target by ``kernels._targets``. The integer
codes below are what the kernels receive; ``gpu4d.preprocessing`` maps option names to them.
"""

from __future__ import annotations

import math

import numpy as np

TRANSFORM_NONE = 0
TRANSFORM_SQRT = 1
TRANSFORM_LOG1P = 2

NORM_NONE = 0
NORM_MAX = 1
NORM_L2 = 2
NORM_SUM = 3


def read_pixel(pattern_stack, i, y, x):
    """Pixel (y, x) of pattern i as float32-safe float; 0 outside the detector."""
    if y < 0 or x < 0 or y >= pattern_stack.shape[1] or x >= pattern_stack.shape[2]:
        return 0.0
    return float(pattern_stack[i, y, x])


def make_bilinear_pixel(read_pixel):
    """Build ``bilinear_pixel`` over a target's compiled ``read_pixel``.

    Helpers that call other helpers are built by such factories, because a numba function can
    only call functions compiled for the same target.
    """

    def bilinear_pixel(pattern_stack, i, fy, fx):
        """Pattern i sampled at the sub-pixel position (fy, fx); zero outside the detector."""
        y0 = int(math.floor(fy))
        x0 = int(math.floor(fx))
        wy = fy - y0
        wx = fx - x0
        top = (1.0 - wx) * read_pixel(pattern_stack, i, y0, x0) + wx * read_pixel(
            pattern_stack, i, y0, x0 + 1
        )
        bottom = (1.0 - wx) * read_pixel(pattern_stack, i, y0 + 1, x0) + wx * read_pixel(
            pattern_stack, i, y0 + 1, x0 + 1
        )
        return (1.0 - wy) * top + wy * bottom

    return bilinear_pixel


def transform_value(value, code):
    """Intensity transform; negative values (dark-subtracted data) count as zero."""
    if code == TRANSFORM_NONE:
        return value
    if value <= 0.0:
        return 0.0
    if code == TRANSFORM_SQRT:
        return math.sqrt(value)
    return math.log1p(value)


def norm_accumulate(acc, value, code):
    """Fold one pixel value into the running normalization statistic."""
    if code == NORM_MAX:
        return max(acc, abs(value))
    if code == NORM_L2:
        return acc + value * value
    if code == NORM_SUM:
        return acc + abs(value)
    return acc


def norm_combine(acc_a, acc_b, code):
    """Merge two partial statistics (for tree reductions)."""
    if code == NORM_MAX:
        return max(acc_a, acc_b)
    return acc_a + acc_b


def norm_scale(acc, code):
    """Factor that normalizes a pattern; 0 for an all-zero pattern, so never NaN."""
    if code == NORM_NONE:
        return 1.0
    if acc <= 0.0:
        return 0.0
    if code == NORM_L2:
        return 1.0 / math.sqrt(acc)
    return 1.0 / acc


# ------------------------------------------------------------------ float32 twins for CUDA
# The CUDA kernel computes in float32: float64 runs at 1/32-1/64 of the float32 rate on
# GeForce and workstation cards. The CPU kernel already stores each value as float32 before
# transforming it, so these agree with it to float32 round-off (the simulator tests' bound).
# Python float literals are float64 in numba, hence the np.float32 constants.


def read_pixel_f32(pattern_stack, i, y, x):
    """Pixel (y, x) of pattern i as float32; 0 outside the detector."""
    if y < 0 or x < 0 or y >= pattern_stack.shape[1] or x >= pattern_stack.shape[2]:
        return np.float32(0.0)
    return np.float32(pattern_stack[i, y, x])


def make_bilinear_pixel_f32(read_pixel_f32):
    """Build ``bilinear_pixel_f32`` over a target's compiled ``read_pixel_f32``."""

    def bilinear_pixel_f32(pattern_stack, i, y0, x0, wy, wx):
        """Pattern i sampled at (y0 + wy, x0 + wx): integer corner, float32 weights in [0, 1).

        The caller splits a shift into ``floor`` and fraction once per pattern, so the weights
        are exact (as the CPU kernel's) however far from the origin the pixel lies.
        """
        one = np.float32(1.0)
        top = (one - wx) * read_pixel_f32(pattern_stack, i, y0, x0) + wx * read_pixel_f32(
            pattern_stack, i, y0, x0 + 1
        )
        bottom = (one - wx) * read_pixel_f32(pattern_stack, i, y0 + 1, x0) + wx * read_pixel_f32(
            pattern_stack, i, y0 + 1, x0 + 1
        )
        return (one - wy) * top + wy * bottom

    return bilinear_pixel_f32


def transform_value_f32(value, code):
    """``transform_value`` for a float32 value, in float32."""
    if code == TRANSFORM_NONE:
        return value
    if value <= np.float32(0.0):
        return np.float32(0.0)
    if code == TRANSFORM_SQRT:
        return math.sqrt(value)
    return math.log1p(value)


def norm_scale_f32(acc, code):
    """``norm_scale`` of a float32 statistic, in float32."""
    if code == NORM_NONE:
        return np.float32(1.0)
    if acc <= np.float32(0.0):
        return np.float32(0.0)
    if code == NORM_L2:
        return np.float32(1.0) / math.sqrt(acc)
    return np.float32(1.0) / acc


def make_blurred_pixel_f32(read_pixel_f32, bilinear_pixel_f32):
    """Build ``blurred_pixel_f32`` over a target's compiled read and bilinear functions."""

    def blurred_pixel_f32(pattern_stack, i, y, x, taps, keep, use_shifts, floor_y, floor_x, wy, wx):
        """The aligned, masked pattern i at (y, x) convolved with the separable kernel
        ``taps`` (odd length, centred) on both detector axes, in float32.

        The aligned pattern at (y, x) is pattern i sampled at (y + floor_y + wy, x + floor_x +
        wx) (``use_shifts``) or read at (y, x); it is 0 where ``keep`` (qy, qx) is 0 (masked
        pixels: the direct beam, bad pixels) and outside the detector. The CPU kernel
        (``kernels.blur``) computes the same sums as two one-axis passes."""
        r = (taps.shape[0] - 1) // 2
        total = np.float32(0.0)
        for a in range(-r, r + 1):
            yy = y + a
            if yy < 0 or yy >= keep.shape[0]:
                continue
            along = np.float32(0.0)
            for b in range(-r, r + 1):
                xx = x + b
                if xx >= 0 and xx < keep.shape[1] and keep[yy, xx] != 0:
                    if use_shifts:
                        value = bilinear_pixel_f32(pattern_stack, i, yy + floor_y, xx + floor_x, wy, wx)
                    else:
                        value = read_pixel_f32(pattern_stack, i, yy, xx)
                    along += taps[b + r] * value
            total += taps[a + r] * along
        return total

    return blurred_pixel_f32
