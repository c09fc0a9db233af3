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
    align) and a JSON-ready summary of the alignment.

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
    # on the device until the pass ends: a copy to the host per batch would wait for its kernels
    centres = backend.to_host(executor.run(BeamCentres(method, reference, radius, window), None, progress))
    shifts, info = descan_shifts(centres.reshape(*dataset.scan_shape, 2), method, reference)
    info.update(reference=[float(v) for v in reference], beam_radius_px=radius, window_radius_px=window)
    if auto:
        wander = float(np.ptp(shifts, axis=0).max()) if len(shifts) else 0.0
        applied = wander >= AUTO_ALIGN_THRESHOLD_PX
        info["auto"] = {
            "rule": f"aligned when the fitted beam position wanders by >= {AUTO_ALIGN_THRESHOLD_PX} px "
                    "peak to peak on either detector axis",
            "wander_px": wander,
            "threshold_px": AUTO_ALIGN_THRESHOLD_PX,
            "applied": applied,
        }
        if not applied:
            shifts = None
    return centres, shifts, info
