"""Smooth per-position fields over the scan: descan drift and specimen thickness."""

from __future__ import annotations

import math

import numpy as np

DRIFT_KINDS = ("none", "linear", "curved")


def drift_field(scan_shape: tuple[int, int], kind: str, amplitude_px: float, integer: bool, rng: np.random.Generator) -> np.ndarray:
    """Descan shift (ny, nx, 2) of the pattern centre ``(dy, dx)``, pixels.

    ``linear``: each component a ramp across the scan in a random direction; ``curved``: a ramp
    plus a quadratic bow and a slow sinusoid (the shape of a real descan error). Each component's
    largest magnitude is ``amplitude_px``; ``integer`` rounds the shifts to whole pixels (the
    beam jumps between pixels instead of sliding).
    """
    if kind not in DRIFT_KINDS:
        raise ValueError(f"drift kind={kind!r} should be one of {DRIFT_KINDS}")
    ny, nx = scan_shape
    if kind == "none" or amplitude_px == 0:
        return np.zeros((ny, nx, 2))
    v, u = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    components = []
    for _ in range(2):
        angle = rng.uniform(0, 2 * math.pi)
        field = math.cos(angle) * u + math.sin(angle) * v
        if kind == "curved":
            bow = rng.uniform(0.6, 1.2) * (u**2 + 0.5 * v**2) * rng.choice([-1, 1])
            wave = 0.3 * np.sin(math.pi * (rng.uniform(0.6, 1.2) * u + rng.uniform(0.6, 1.2) * v) + rng.uniform(0, 2 * math.pi))
            field = field + bow + wave
        field = field - field.mean()
        components.append(field * amplitude_px / np.abs(field).max())
    shift = np.stack(components, axis=-1)
    return np.round(shift) if integer else shift


def thickness_map(scan_shape: tuple[int, int], thin_nm: float, thick_nm: float, rng: np.random.Generator) -> np.ndarray:
    """Thickness (ny, nx), nm: a wedge from ``thin_nm`` to ``thick_nm`` in a random direction."""
    ny, nx = scan_shape
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:ny, 0:nx]
    ramp = yy * math.sin(angle) + xx * math.cos(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-12)
    return thin_nm + (thick_nm - thin_nm) * ramp
