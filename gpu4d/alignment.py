"""The alignment pass: measure every pattern's direct beam and turn the centres into shifts.

Runs before the preprocessing pass because ``"fit"`` needs the centres of the whole scan. The
shifts then go to the preprocessing kernel, which samples each pattern onto the reference beam.
"""

from __future__ import annotations

import numpy as np

from .align import AUTO_ALIGN_THRESHOLD_PX, DEFAULT_ALIGN_METHOD, default_window_radius, descan_shifts
from .io.dataset import Dataset
from .engine import InlineExecutor
from .engine.passes import BeamCentres
from .masks import find_beam


def measure_alignment(
    dataset: Dataset, backend, method: str, mean: np.ndarray, batch_size: int, progress=False, executor=None
):
    """Centres (n, 2) float32, shifts (n, 2) float32 (None when ``"auto"`` decides not to
    align; the centres too when it decided on a grid of patterns, ``_grid_wander``) and a
    JSON-ready summary of the alignment.

    The reference is the beam centre of the mean pattern (where the mask is drawn); the search
    window is centred there, wide enough for the beam wherever descan moves it. Dead and hot
    pixels read 0 (``dataset.zeroed_pixels``): a hot pixel in the window would pull every centre
    towards it, by an amount that changes with the beam's intensity. ``"auto"`` measures and fits as ``DEFAULT_ALIGN_METHOD`` and
    keeps the shifts only when the fitted beam wanders by ``AUTO_ALIGN_THRESHOLD_PX`` or more.
    """
    auto = method == "auto"
    if auto:
        method = DEFAULT_ALIGN_METHOD
    beam = find_beam(mean)
    reference = tuple(beam["centre"])
    radius = beam["half_max_radius"]
    window = default_window_radius(radius)
    executor = executor or InlineExecutor(dataset, backend, batch_size)
    beam_info = {"reference": [float(v) for v in reference], "beam_radius_px": radius, "window_radius_px": window}
    if auto:
        quick = _grid_wander(executor, method, reference, radius, window)
        if quick is not None and quick < GRID_MARGIN * AUTO_ALIGN_THRESHOLD_PX:
            return None, None, {"method": method, **beam_info, "auto": _auto_summary(quick, on_grid=True)}
    # on the device until the pass ends: a copy to the host per batch would wait for its kernels
    centres = backend.to_host(executor.run(BeamCentres(method, reference, radius, window), None, progress))
    shifts, info = descan_shifts(centres.reshape(*dataset.scan_shape, 2), method, reference)
    info.update(beam_info)
    if auto:
        info["auto"] = _auto_summary(_wander(shifts))
        if not info["auto"]["applied"]:
            shifts = None
    return centres, shifts, info


#: ``"auto"`` first fits the descan on a grid of at most ``GRID_PATTERNS`` patterns (every few
#: scan rows and columns, the last ones included): when the beam wanders there by less than
#: ``GRID_MARGIN`` times the threshold, the scan is not aligned and the pass over every pattern
#: is skipped (on the seed-sized scan it cost 0.5-0.75 s, for a scan with no descan). Nearer the
#: threshold every pattern is measured and the decision is the full fit's, as before.
GRID_PATTERNS = 1024
GRID_MARGIN = 0.5


def _grid_wander(executor, method, reference, radius, window) -> float | None:
    """Peak-to-peak wander (px) of the descan fitted on a grid of the scan's patterns; None
    for a scan too small to be worth sampling."""
    ny, nx = executor.dataset.scan_shape
    step = int(np.ceil(np.sqrt(ny * nx / GRID_PATTERNS)))
    if step < 2:
        return None
    rows = np.unique(np.append(np.arange(0, ny, step), ny - 1))
    cols = np.unique(np.append(np.arange(0, nx, step), nx - 1))
    sample = (rows[:, None] * nx + cols[None, :]).ravel()
    centres = executor.backend.to_host(
        executor.run(BeamCentres(method, reference, radius, window, sample=sample), None, False)
    )
    shifts, _ = descan_shifts(centres.reshape(rows.size, cols.size, 2), method, reference)
    return _wander(shifts)


def _wander(shifts: np.ndarray) -> float:
    """Peak to peak of the shifts on the detector axis where it is larger (px)."""
    return float(np.ptp(shifts, axis=0).max()) if len(shifts) else 0.0


def _auto_summary(wander: float, *, on_grid: bool = False) -> dict:
    """summary.json's record of what ``"auto"`` decided, and on what."""
    summary = {
        "rule": f"aligned when the fitted beam position wanders by >= {AUTO_ALIGN_THRESHOLD_PX} px "
                "peak to peak on either detector axis",
        "wander_px": wander,
        "threshold_px": AUTO_ALIGN_THRESHOLD_PX,
        "applied": wander >= AUTO_ALIGN_THRESHOLD_PX,
    }
    if on_grid:
        summary["measured_on"] = (
            f"a grid of at most {GRID_PATTERNS} patterns: below {GRID_MARGIN} x the threshold there, "
            "so the beam was not measured in every pattern"
        )
    return summary
