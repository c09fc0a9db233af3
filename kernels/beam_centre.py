"""Direct-beam centre of every pattern of a batch on the CPU: thresholded centre of mass.

The CUDA twin is ``kernels.beam_centre_cuda``; both share ``kernels.centre_math``.

For pattern i, with window centre ``(cy, cx) = centres[i]`` (or ``centres[0]`` for all when
``centres`` has one row) and ``radius``:

1. ``peak`` = maximum of the pixels whose centre lies within ``radius`` of (cy, cx);
2. ``level = threshold * peak``; each window pixel weighs ``max(value - level, 0)``;
3. the centre is ``(cy, cx) + sum(weight * (y - cy, x - cx)) / sum(weight)``.

A pattern whose window holds no positive pixel (``peak <= 0``: empty, dark-subtracted to
nothing, or a window entirely off the detector) gets ``(NaN, NaN)``: "not measured".

Inputs of both kernels
----------------------
raw : (n, qy, qx) uint8, uint16, uint32, float32 or float64
    Raw patterns, converted to float on the fly.
centres : (n, 2) or (1, 2) float64
    Window centre (cy, cx) of each pattern, or one for all, detector pixels.
radius : float
    Window radius, detector pixels.
threshold : float
    Fraction of the window's maximum below which pixels carry no weight, in [0, 1).
out : (n, 2) float32
    Measured (cy, cx) of each pattern, written in place.
"""

from __future__ import annotations

from numba import njit, prange

from . import _targets, centre_math, pixel_math

_read_cpu = _targets.for_cpu(pixel_math.read_pixel)
_start_cpu = _targets.for_cpu(centre_math.window_start)
_stop_cpu = _targets.for_cpu(centre_math.window_stop)
_inside_cpu = _targets.for_cpu(centre_math.in_window)
_weight_cpu = _targets.for_cpu(centre_math.threshold_weight)
_coordinate_cpu = _targets.for_cpu(centre_math.centre_coordinate)


@njit(parallel=True, cache=True)
def beam_centre_cpu_kernel(raw, centres, radius, threshold, out):
    """CPU kernel: one pattern per parallel iteration, float64 sums, two passes over the window."""
    one_centre = centres.shape[0] == 1
    for i in prange(raw.shape[0]):
        # branch instead of ``k = 0 if one_centre else i``: numba unifies the int literal with
        # prange's unsigned index as float64, which cannot index
        if one_centre:
            cy = centres[0, 0]
            cx = centres[0, 1]
        else:
            cy = centres[i, 0]
            cx = centres[i, 1]
        y0 = _start_cpu(cy, radius)
        y1 = _stop_cpu(cy, radius, raw.shape[1])
        x0 = _start_cpu(cx, radius)
        x1 = _stop_cpu(cx, radius, raw.shape[2])
        peak = 0.0
        for y in range(y0, y1):
            for x in range(x0, x1):
                if _inside_cpu(y, x, cy, cx, radius):
                    peak = max(peak, _read_cpu(raw, i, y, x))
        level = threshold * peak
        total = 0.0
        sum_y = 0.0
        sum_x = 0.0
        if peak > 0.0:
            for y in range(y0, y1):
                for x in range(x0, x1):
                    if _inside_cpu(y, x, cy, cx, radius):
                        weight = _weight_cpu(_read_cpu(raw, i, y, x), level)
                        total += weight
                        sum_y += weight * (y - cy)
                        sum_x += weight * (x - cx)
        out[i, 0] = _coordinate_cpu(cy, sum_y, total)
        out[i, 1] = _coordinate_cpu(cx, sum_x, total)


def launch_beam_centre_cpu(raw, centres, radius, threshold, out):
    """Run the CPU kernel over a batch (see the module docstring for the arguments)."""
    beam_centre_cpu_kernel(raw, centres, float(radius), float(threshold), out)
    return out
