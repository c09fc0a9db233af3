"""The detector's offset: a constant level every pixel reads in every frame, subtracted on read.

Integrating detectors (CCD and CMOS cameras, pixel-array detectors) add a dark level (pedestal)
to every pixel, and many files keep it. It carries no information about the specimen, but it
wrecks the preprocessing: ``sqrt(100 + s)`` squeezes a few counts of diffraction ``s`` into a
hundredth of the scale, and every pattern becomes a constant plus a faint copy of itself, so
per-pattern normalization then sorts the patterns by their brightest pixel. Measured on diffsims
scans (5 grains, a 3% band, 1,500 counts per pattern; 2026-12-01): a pedestal of 20 counts
already gave the wrong suggested k (4 for 6); 100 counts: ARI 0.77 at the true k and k = 2; a
CMOS-like detector (30 counts per electron, pedestal 1,000, read noise 10): ARI 0.92, k = 3.
With the offset subtracted, every one of them gives ARI 1.000 and k = 6.

The rule (``"auto"``, the default): the offset is the ``OFFSET_PERCENTILE``-th percentile, over
the pixels that ever read a value, of each pixel's smallest value in the frames sampled for the
mask (``gpu4d.bad_pixels.pattern_statistics``): a level (nearly) every pixel holds in every
frame. Read noise puts that minimum a few noise widths below the pedestal, so a little of the
pedestal stays, which does no harm. A counting detector reads 0 somewhere in most frames, so its
offset is 0 and nothing changes (the 40 scans of ``bench_quality.py`` without a pedestal, all of
``bench_abtem.py``).
Pixels that never read anything (dead, or outside a detector's active area) do not count. A
negative floor (data already dark-subtracted, with read noise around zero) gives 0: gpu4d only
ever subtracts.
"""

from __future__ import annotations

import numbers

import numpy as np

from .errors import InputError

#: The offset is this percentile, over the detector's pixels, of each pixel's smallest value.
OFFSET_PERCENTILE = 5.0

def parse_offset(value) -> str | float:
    """``"auto"``, or a number >= 0 of counts to subtract (``"none"``, None, False: 0)."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("none", "off")):
        return 0.0
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        try:
            value = float(text)
        except ValueError:
            raise InputError(f"offset={value!r} should be 'auto', 'none' or a number of counts >= 0") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
        raise InputError(f"offset={value!r} should be 'auto', 'none' or a number of counts >= 0")
    return float(value)


def find_offset(minimum: np.ndarray, maximum: np.ndarray) -> float:
    """The offset (the module's rule) from the per-pixel smallest and largest values of a sample."""
    read_something = maximum > 0
    if not read_something.any():
        return 0.0
    floor = float(np.percentile(minimum[read_something], OFFSET_PERCENTILE, method="lower"))
    return max(floor, 0.0)


def subtract_offset(patterns: np.ndarray, offset: float) -> np.ndarray:
    """``patterns - offset`` as a new array of the same dtype; integers stop at 0 (the input
    is never written)."""
    if patterns.dtype.kind in "iu":
        from .kernels.offset import subtract_offset_cpu

        return subtract_offset_cpu(patterns, min(np.floor(offset), np.iinfo(patterns.dtype).max))
    return patterns - patterns.dtype.type(offset)
