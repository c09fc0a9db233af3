"""Scans from diffsims kinematic spot patterns of real crystal structures.

One diffsims simulation per region (a grain's orientation, the band's twin, the inclusions'
phase), not per probe position; every position then gets that region's spots with its own
beam centre (descan), thickness (direct-beam share, spot and halo strength) and dose, and
Poisson noise. See ``render`` for the pattern model.
"""

from __future__ import annotations

import math

import numpy as np

from . import crystals, fields, layouts, render

#: Mean free path for scattering out of the direct beam, nm: the beam keeps exp(-t / this).
MEAN_FREE_PATH_NM = 60.0
#: Shares of the scattered electrons that land in the diffuse halo and flat over the detector
#: (the Bragg share is a scan parameter; the rest scatters off the detector).
HALO_SHARE, FLAT_SHARE = 0.2, 0.1
#: Regions meant to differ must have noise-free spot images with a cosine below this.
MAX_SIMILARITY = 0.5
CANDIDATES_PER_REGION = 12
ORACLE_SAMPLE = 200

DEFAULTS = dict(
    scan=(64, 64), detector=64, phase="Al", n_grains=5, second_phase=None, n_second=0,
    close_pairs=0, misorientation_deg=3.0, band_share=0.0, inclusion_phase=None,
    inclusion_share=0.0, inclusion_count=2, drift="none", drift_px=0.0, drift_integer=False,
    dose=1000.0, thickness_nm=(20.0, 150.0), dtype="uint16", hot=0, dead=0, dynamical=0.0,
    precession_deg=0.0, bragg_share=0.35, field_inv_A=1.3, beam_radius_frac=0.045,
    spot_sigma_frac=0.014, halo_sigma_frac=0.08, gain=1.0, pedestal=0.0, read_noise=0.0,
    spike_share=0.0, spike_counts=0.0, spike_size=1,
)


def make(seed: int, **params) -> tuple[np.ndarray, np.ndarray, dict]:
    """Generate a scan: ``(data (ny, nx, q, q), labels (ny, nx) int32, info dict)``.

    Parameters are those of ``DEFAULTS`` (unknown names raise). Labels: grains ``0..n-1``, then
    the band (if ``band_share``), then the inclusions (if ``inclusion_share``).
    """
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown diffsims scan parameters: {sorted(unknown)}")
    p = {**DEFAULTS, **params}
    rng = np.random.default_rng(seed)
    ny, nx = p["scan"]
    q = int(p["detector"])
    small = [s for s in (p["band_share"], p["inclusion_share"]) if s > 0]
    labels = layouts.voronoi_grains((ny, nx), p["n_grains"], rng, min_share=max(small, default=0.02) * 1.6)

    grain_phase = [p["phase"]] * (p["n_grains"] - p["n_second"]) + [p["second_phase"]] * p["n_second"]
    px_per_inv_A = (q / 2) / p["field_inv_A"]
    radius_inv_A = math.sqrt(2) * p["field_inv_A"] + 0.1
    sigma = p["spot_sigma_frac"] * q
    geometry = (q, px_per_inv_A, sigma)

    matrices, spots, templates, described = [], [], [], []
    partner = _close_partners(labels, p["close_pairs"], rng)
    for g in range(p["n_grains"]):
        name = grain_phase[g]
        if g in partner:  # a low-angle neighbour of an earlier grain of the same phase
            m = crystals.misoriented(matrices[partner[g]], math.radians(p["misorientation_deg"]), rng)
            s = crystals.simulate_spots(name, [m], radius_inv_A, p["precession_deg"])[0]
            desc = {"phase": name, "misoriented_from": partner[g], "angle_deg": p["misorientation_deg"]}
        else:
            m, s, desc = _distinct_orientation(name, templates, radius_inv_A, geometry, p["precession_deg"], rng)
        matrices.append(m)
        spots.append(s)
        templates.append(_template(s, geometry))
        described.append(desc)

    if p["band_share"] > 0:
        host = int(np.argmax(np.bincount(labels.ravel())))
        band = layouts.band(labels, host, p["band_share"], rng)
        name = grain_phase[host]
        best = None
        for axis in range(len(crystals.TWIN_AXES[crystals.lattice_family(name)])):
            twin = crystals.simulate_spots(name, [crystals.twinned(name, matrices[host], axis)], radius_inv_A, p["precession_deg"])[0]
            mixed = spots[host].merged(twin, 0.45)  # the probe passes through matrix and twin
            t = _template(mixed, geometry)
            sim = max(_cos(t, o) for o in templates)
            if best is None or sim < best[0]:
                best = (sim, mixed, t, axis)
        labels[band] = p["n_grains"]
        spots.append(best[1])
        templates.append(best[2])
        described.append({"phase": name, "twin_of": host, "twin_axis": list(crystals.TWIN_AXES[crystals.lattice_family(name)][best[3]])})

    if p["inclusion_share"] > 0:
        # inside grains only: an inclusion must not eat into the band
        mask = layouts.inclusions(labels, p["inclusion_share"], p["inclusion_count"], rng, allowed=labels < p["n_grains"])
        m, s, desc = _distinct_orientation(p["inclusion_phase"], templates, radius_inv_A, geometry, p["precession_deg"], rng)
        labels[mask] = len(spots)
        spots.append(s)
        templates.append(_template(s, geometry))
        described.append({**desc, "inclusions": p["inclusion_count"]})

    regions = _regions(spots, px_per_inv_A, rng)
    beam = _beam(labels, p, q, rng)
    data = render.render(labels, regions, beam, (q, q), p["dtype"], rng)
    if (p["gain"], p["pedestal"], p["read_noise"]) != (1.0, 0.0, 0.0):
        data = render.detector_response(data, p["gain"], p["pedestal"], p["read_noise"], rng)
    bad = render.bad_pixels(data, p["hot"], p["dead"], rng) if p["hot"] or p["dead"] else {"hot": [], "dead": []}
    if p["spike_share"]:
        render.spikes(data, p["spike_share"], p["spike_counts"], p["spike_size"], np.random.default_rng([seed, 3]))
    oracle = render.oracle_error(data, labels, regions, beam, bad["hot"] + bad["dead"], ORACLE_SAMPLE, rng)

    similarity = np.array([[_cos(a, b) for b in templates] for a in templates])
    np.fill_diagonal(similarity, 0)
    info = {
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()},
        "regions": described,
        "max_region_similarity": float(similarity.max()),
        "beam_ratio": float(beam.beam_e.max() / beam.beam_e.min()),
        "drift_range_px": float(np.abs(beam.centres - (q - 1) / 2).max()),
        "bad_pixels": bad,
        "oracle_error": oracle,
    }
    return data, labels, info


def _close_partners(labels: np.ndarray, n_pairs: int, rng) -> dict:
    """{grain: earlier neighbouring grain} for ``n_pairs`` disjoint pairs of touching grains."""
    pairs = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
        edge = a != b
        pairs |= {tuple(sorted(x)) for x in zip(a[edge].tolist(), b[edge].tolist())}
    pairs = sorted(pairs)
    rng.shuffle(pairs)
    partner, used = {}, set()
    for i, j in pairs:
        if len(partner) == n_pairs:
            break
        if i not in used and j not in used:
            partner[j] = i
            used |= {i, j}
    return partner


def _distinct_orientation(name, templates, radius_inv_A, geometry, precession_deg, rng):
    """A zone-axis orientation of ``name`` whose spot image differs from every template."""
    zones = crystals.ZONES[crystals.lattice_family(name)]
    tries = []
    for _ in range(CANDIDATES_PER_REGION):
        tries.append(dict(
            zone=zones[rng.integers(len(zones))], in_plane_rad=rng.uniform(0, 2 * math.pi),
            tilt_rad=math.radians(rng.uniform(0.3, 2.0)), tilt_axis_rad=rng.uniform(0, 2 * math.pi),
        ))
    matrices = [crystals.zone_matrix(name, **t) for t in tries]
    candidates = crystals.simulate_spots(name, matrices, radius_inv_A, precession_deg)
    best = None
    for t, m, s in zip(tries, matrices, candidates):
        template = _template(s, geometry)
        if not template.any():
            continue
        sim = max((_cos(template, o) for o in templates), default=0.0)
        rich = len(s.intensity) >= 6
        score = (sim < MAX_SIMILARITY and rich, -sim)
        if best is None or score > best[0]:
            best = (score, m, s, t)
    _, m, s, t = best
    desc = {"phase": name, "zone": list(t["zone"]), "in_plane_deg": round(math.degrees(t["in_plane_rad"]), 2),
            "tilt_deg": round(math.degrees(t["tilt_rad"]), 2)}
    return m, s, desc


def _template(spots: crystals.Spots, geometry) -> np.ndarray:
    """Noise-free spot image (q, q) at the detector centre, unit total, for comparisons."""
    q, scale, sigma = geometry
    centre = (q - 1) / 2
    pix = np.arange(q, dtype=np.float64)
    gy = render.pixel_gauss(pix, (centre + spots.gy * scale)[None], sigma)[0]
    gx = render.pixel_gauss(pix, (centre + spots.gx * scale)[None], sigma)[0]
    image = (gy * spots.intensity) @ gx.T
    total = image.sum()
    return image / total if total > 0 else image


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(np.sum(a * b) / (na * nb)) if na > 0 and nb > 0 else 0.0


def _regions(spots: list, px_per_inv_A: float, rng) -> render.Regions:
    out = render.Regions([], [], [], [], [])
    for s in spots:
        out.dy.append(s.gy * px_per_inv_A)
        out.dx.append(s.gx * px_per_inv_A)
        out.weight.append(s.intensity / s.intensity.sum())
        # extinction-distance-like periods: strong, low-order reflections oscillate faster
        out.period_nm.append(rng.uniform(40.0, 160.0, size=len(s.intensity)))
        out.phase.append(rng.uniform(0, 2 * math.pi, size=len(s.intensity)))
    return out


def _beam(labels: np.ndarray, p: dict, q: int, rng) -> render.Beam:
    ny, nx = labels.shape
    thin, thick = p["thickness_nm"]
    thickness = fields.thickness_map((ny, nx), thin, thick, rng).ravel()
    drift = fields.drift_field((ny, nx), p["drift"], p["drift_px"], p["drift_integer"], rng).reshape(-1, 2)
    unscattered = np.exp(-thickness / MEAN_FREE_PATH_NM)
    scattered = 1 - unscattered
    detected = unscattered + scattered * (p["bragg_share"] + HALO_SHARE + FLAT_SHARE)
    electrons = p["dose"] / detected.mean()  # incident electrons: the mean detected is the dose
    return render.Beam(
        beam_e=electrons * unscattered,
        bragg_e=electrons * scattered * p["bragg_share"],
        halo_e=electrons * scattered * HALO_SHARE,
        flat_e=electrons * scattered * FLAT_SHARE,
        centres=(q - 1) / 2 + drift,
        thickness=thickness,
        beam_radius=p["beam_radius_frac"] * q,
        spot_sigma=p["spot_sigma_frac"] * q,
        halo_sigma=p["halo_sigma_frac"] * q,
        dynamical=p["dynamical"],
    )
