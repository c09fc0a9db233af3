"""Scans from ``gpu4d.synthetic.make_scan`` (perovskite polycrystal, twin lamella), with
optional hot and dead detector pixels added afterwards."""

from __future__ import annotations

import numpy as np

from . import render

#: make_scan's ``dose`` counts electrons before some scatter off the detector; about this share
#: of them is detected over its default thickness wedge (the dose asked for is the detected one,
#: and the scan's measured counts per pattern are recorded beside it).
DETECTED_SHARE = 0.62

DEFAULTS = dict(
    scan=(64, 64), detector=64, n_grains=4, defect=True, drift_px=0.0, dose=1000.0,
    thickness_gradient=True, dtype="uint16", hot=0, dead=0, gain=1.0, pedestal=0.0, read_noise=0.0,
    spike_share=0.0, spike_counts=0.0, spike_size=1,
)


def make(seed: int, **params) -> tuple[np.ndarray, np.ndarray, dict]:
    """Generate a scan: ``(data (ny, nx, q, q), labels (ny, nx) int32, info dict)``."""
    from gpu4d.synthetic import make_scan

    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown synthetic scan parameters: {sorted(unknown)}")
    p = {**DEFAULTS, **params}
    scan = make_scan(
        scan_shape=tuple(p["scan"]), detector_shape=(p["detector"], p["detector"]),
        n_grains=p["n_grains"], defect=p["defect"], drift_px=p["drift_px"],
        dose=p["dose"] / DETECTED_SHARE, thickness_gradient=p["thickness_gradient"],
        dtype=p["dtype"], seed=seed,
    )
    data = scan.data
    rng = np.random.default_rng([seed, 1])
    if (p["gain"], p["pedestal"], p["read_noise"]) != (1.0, 0.0, 0.0):
        data = render.detector_response(data, p["gain"], p["pedestal"], p["read_noise"], np.random.default_rng([seed, 2]))
    bad = render.bad_pixels(data, p["hot"], p["dead"], rng) if p["hot"] or p["dead"] else {"hot": [], "dead": []}
    if p["spike_share"]:
        render.spikes(data, p["spike_share"], p["spike_counts"], p["spike_size"], np.random.default_rng([seed, 3]))
    # the direct beam's share of the electrons follows the thickness: exp(-t / mean free path)
    from gpu4d import synthetic

    beam = np.exp(-scan.thickness_nm / synthetic.MEAN_FREE_PATH_NM)
    info = {
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()},
        "beam_ratio": float(beam.max() / beam.min()),
        "bad_pixels": bad,
        "drift_range_px": float(np.abs(scan.beam_centres - (np.array(data.shape[2:]) - 1) / 2).max()),
        "oracle_error": None,  # make_scan does not expose its noise-free patterns
    }
    return data, scan.labels.astype(np.int32), info
