"""Per-pixel math shared by the CPU and CUDA beam-centre kernels.

Plain functions of scalars, compiled for each target by ``kernels._targets``. The beam centre
of a pattern is the centre of mass of ``value - level`` over the pixels of a circular window
whose value exceeds ``level = threshold * (window maximum)``. Subtracting the level (rather
than weighting by the raw value) makes every pixel's weight go to zero continuously as it
crosses the threshold, so the centre moves smoothly with the beam instead of jumping when an
edge pixel enters or leaves the selection, and a flat background adds nothing.

Pixel centres sit at integer coordinates; the window holds the pixels whose centre is within
``radius`` of the window centre ``(cy, cx)``. Sums are taken relative to the window centre,
which keeps them small and the float32 round-off of a GPU accumulation negligible.
"""

from __future__ import annotations

import math


def window_start(centre, radius):
    """First detector row (or column) of the window's bounding box, clipped at 0."""
    return max(0, int(math.ceil(centre - radius)))


def window_stop(centre, radius, size):
    """One past the last row (or column) of the window's bounding box, clipped at ``size``."""
    return min(size, int(math.floor(centre + radius)) + 1)


def in_window(y, x, cy, cx, radius):
    """True when pixel (y, x) lies in the circular window of ``radius`` around (cy, cx)."""
    dy = y - cy
    dx = x - cx
    return dy * dy + dx * dx <= radius * radius


def threshold_weight(value, level):
    """Centre-of-mass weight of a pixel: its excess over ``level``, zero at or below it."""
    if value > level:
        return value - level
    return 0.0


def centre_coordinate(window_centre, weighted_offset, total_weight):
    """``window_centre + weighted_offset / total_weight``; NaN when nothing had weight."""
    if total_weight > 0.0:
        return window_centre + weighted_offset / total_weight
    return math.nan
