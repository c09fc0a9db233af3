"""Detector blur: each pattern is blurred by a Gaussian over the detector before the transform.

At low dose a diffraction spot is a few counts spread over the pixels of its profile. The
square root of one pixel's 0, 1 or 2 counts says little about the spot; the square root of the
counts pooled over the spot says more. So the features are the (masked, aligned) patterns
blurred by a Gaussian of about a spot's width, then ``sqrt`` and normalized: the matched filter
of a spot, before the variance-stabilizing transform. Blurring after the square root (a blur of
the features, which would cost nothing in the sketch) found none of the low-dose twin lamellae
that blurring before it finds.

``blur="auto"`` (default): sigma = the detector's larger side / 128 px (0.5 px on 64 px, 1 px
on 128, 2 px on 256): spots cover about the same share of the detector whatever its pixel
count. Measured on ``benchmarks/bench_quality.py`` (2026-12-01, README): right maps at the
true k on 47 of 48 scans against 41 without. On its 44 smaller scans (a prototype) this sigma
gave 43, 0.7x and 1.5x of it 42 and 43: the rule is not on a knife's edge. ``blur=0``
(``"none"``) switches it off; a number is sigma in detector pixels. Only the features are
blurred: the mask, alignment, spikes and the mean patterns of the clusters see the patterns as
they are; the masked pixels are zeroed before the blur (``kernels.blur``).

Cost: every pass over the scan blurs every pattern; on 2 CPU cores that doubles ``cluster``'s
time on the seed-sized scan (README, Benchmarks). On a GPU it is one more kernel per batch.
"""

from __future__ import annotations

import math

from .errors import InputError

#: sigma per detector pixel of ``blur="auto"``: sigma = max(qy, qx) / 128.
AUTO_SIGMA_PER_PX = 1.0 / 128
#: A larger sigma is refused: it would blur a pattern into its mean.
MAX_SIGMA_PX = 16.0


def parse_blur(value) -> str | float:
    """The ``blur`` option: ``"auto"``, or sigma in detector px (0, ``"none"`` or False: none)."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("none", "off")):
        return 0.0
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        sigma = float(value)
    except (TypeError, ValueError):
        sigma = math.nan
    if isinstance(value, bool) or not (0.0 <= sigma <= MAX_SIGMA_PX):
        raise InputError(
            f"blur={value!r} should be 'auto' (the default: sigma = detector size / 128), 'none' or 0, "
            f"or a Gaussian sigma in detector pixels from 0 to {MAX_SIGMA_PX:g}"
        )
    return sigma


def blur_sigma(blur, detector_shape) -> float:
    """The sigma (detector px) a parsed ``blur`` option means for this detector."""
    if blur == "auto":
        return float(max(detector_shape)) * AUTO_SIGMA_PER_PX
    return float(blur)
