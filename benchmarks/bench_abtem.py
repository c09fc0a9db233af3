"""Map quality on scans from a third physics model: abTEM multislice (dynamical diffraction).

    python benchmarks/bench_abtem.py              # 36 scans (9 conditions x 2 seeds x 2 halves)
    python benchmarks/bench_abtem.py --only band --half tune  # the tune scans whose name holds "band"
    python benchmarks/bench_abtem.py --seeds 21,22  # every condition at two seeds of neither half

``bench_quality.py``'s two generators draw spot intensities from a kinematic model (diffsims,
``gpu4d.synthetic``), with at most an imposed oscillation. Here each region's spot intensities
come from a multislice simulation (abTEM, plane wave at 200 kV through a periodic crystal, a
tilt of a few mrad per grain) at 16 thicknesses: the direct beam and every reflection change
with thickness the way dynamical scattering makes them (pendellosung), not by a rule written
here. A probe position then gets its region's pattern at its own thickness (a wedge across the
scan, interpolated between exit planes), rotated by the grain's in-plane angle, spots blurred to
the probe's convergence, a diffuse halo that grows with thickness, the descan shift, and Poisson
noise at the dose. Each condition is rendered with two seeds of the **tune** half (the scans
the 2026-11-30 changes were judged on: the beam search, the 48 atoms, a trend on scan
position that the holdout half then turned down) and two of the **holdout** half (other
orientations, tilts and layouts).

Per scan it prints the ARI of ``gpu4d.cluster(data, true_k)`` at default settings, and the
suggested k of ``gpu4d.sweep(data, 2..12)``. The simulations are cached in ``--cache``
(``benchmarks/.abtem_cache``), since they take most of the time.

Needs ``abtem`` (and ``ase``). abTEM 1.0 asks for zarr >= 3.1 while gpu4d's ``.zspy`` support
(through HyperSpy) needs zarr < 3; the simulations here do not use zarr, so install it as
``pip install abtem && pip install "zarr>=2.16,<3"`` (pip warns about the pin; abTEM imports
and simulates with zarr 2), or generate in another environment: the cache is plain ``.npy``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from quality import fields, layouts  # noqa: E402

ENERGY_EV = 200e3
#: Angular range simulated and put on the detector (half width), mrad.
MAX_ANGLE_MRAD = 40.0
#: Lateral size of the periodic crystal cell (Angstrom, about) and the potential sampling.
CELL_A = 24.0
SAMPLING_A = 0.1
#: Exit planes: thicknesses from THICK_STEP_A to THICK_STEP_A * N_PLANES.
N_PLANES = 16
#: Spots: Gaussian sigma on the detector (probe convergence and PSF), pixels; direct beam disc
#: radius as a share of the detector width.
SPOT_SIGMA_PX = 0.9
BEAM_RADIUS_FRAC = 0.04
#: Diffuse (thermal) halo: share of the electrons at the thickest plane, and its width.
HALO_SHARE_MAX = 0.25
HALO_SIGMA_FRAC = 0.1
GOOD_ARI = 0.95

#: Crystals: ase.build.bulk arguments of a cubic cell.
CRYSTALS = {
    "Au": dict(name="Au", crystalstructure="fcc", a=4.08),
    "Cu": dict(name="Cu", crystalstructure="fcc", a=3.61),
    "Si": dict(name="Si", crystalstructure="diamond", a=5.43),
    "MgO": dict(name="MgO", crystalstructure="rocksalt", a=4.21),
}


@dataclass(frozen=True)
class Condition:
    name: str
    phase: str
    n_grains: int
    dose: float
    dtype: str = "uint16"
    scan: tuple = (56, 56)
    detector: int = 64
    thickness_nm: tuple = (4.0, 30.0)
    drift: str = "none"
    drift_px: float = 0.0
    band_share: float = 0.0  # a band of the host's phase, a few degrees off the host
    band_degrees: float = 6.0
    close_degrees: float = 0.0  # grain 1 this many degrees from grain 0 (in plane) if > 0
    inclusion_phase: str | None = None
    inclusion_share: float = 0.0
    disks: bool = False  # every reflection a disc of the beam's size (a convergent probe)
    amorphous: bool = False  # the last grain is amorphous (random atoms at the phase's density)
    vacuum_share: float = 0.0  # a strip along one scan edge beyond the specimen: the beam alone
    seeds: tuple = (11, 12)  # the tune half: the scans code changes were judged on
    holdout_seeds: tuple = (13, 14)  # never looked at before a change was kept


CONDITIONS = [
    Condition("au-grains", "Au", 5, 1000.0),
    Condition("si-band-lowdose", "Si", 4, 300.0, dtype="uint8", drift="linear", drift_px=1.0, band_share=0.035),
    Condition("cu-close", "Cu", 4, 2000.0, detector=96, drift="curved", drift_px=1.5, close_degrees=4.0),
    Condition("mgo-au-incl", "MgO", 4, 500.0, dtype="uint8", inclusion_phase="Au", inclusion_share=0.03),
    Condition("au-lowdose-det128", "Au", 4, 150.0, dtype="uint8", detector=128, drift="linear", drift_px=2.0),
    Condition("si-3deg-band", "Si", 5, 800.0, drift="curved", drift_px=2.0, band_share=0.02, band_degrees=3.0),
    Condition("au-disks", "Au", 4, 1000.0, detector=96, disks=True, drift="linear", drift_px=1.5),
    Condition("si-amorphous-vacuum", "Si", 4, 600.0, dtype="uint8", amorphous=True, vacuum_share=0.12),
    Condition("au-thick-wedge", "Au", 4, 2000.0, thickness_nm=(5.0, 64.0), drift="curved", drift_px=1.0),
]


# ------------------------------------------------------------------------------ simulation
def simulate(phase: str, tilt_mrad: tuple[float, float], cache: Path, amorphous: bool = False, depth_nm: float = 32.0) -> dict:
    """Diffraction patterns (N_PLANES, g, g) of a plane wave through ``phase`` along [001],
    tilted by ``tilt_mrad``, at thicknesses of 1..N_PLANES exit planes (cached). ``amorphous``:
    the same atoms at random positions instead (one configuration)."""
    deep = "" if depth_nm <= 32.0 else f"-{depth_nm:.0f}nm"
    path = cache / f"{phase}{'-amorphous' if amorphous else ''}{deep}_{tilt_mrad[0]:+.2f}_{tilt_mrad[1]:+.2f}.npz"
    if path.exists():
        with np.load(path) as stored:
            return {name: stored[name] for name in stored.files}
    import abtem
    import ase.build

    abtem.config.set({"device": "cpu"})
    spec = CRYSTALS[phase]
    unit = ase.build.bulk(spec["name"], spec["crystalstructure"], a=spec["a"], cubic=True)
    repeat = max(1, round(CELL_A / spec["a"]))
    depth = max(1, math.ceil(10.0 * max(32.0, depth_nm) / spec["a"]))  # cells along the beam
    atoms = unit * (repeat, repeat, depth)
    if amorphous:
        rng = np.random.default_rng(0)
        atoms.positions = rng.uniform(0, 1, (len(atoms), 3)) * atoms.cell.lengths()
    slice_a = spec["a"] / 2
    step_slices = max(1, round(depth * spec["a"] / N_PLANES / slice_a))
    potential = abtem.Potential(atoms, sampling=SAMPLING_A, slice_thickness=slice_a, exit_planes=step_slices)
    wave = abtem.PlaneWave(energy=ENERGY_EV, tilt=tilt_mrad)
    patterns = wave.multislice(potential).diffraction_patterns(max_angle=MAX_ANGLE_MRAD).compute(progress_bar=False)
    array = np.asarray(patterns.array, np.float64)[1 : N_PLANES + 1]  # plane 0 is the entrance
    thickness_a = np.asarray(patterns.axes_metadata[0].values, np.float64)[1 : N_PLANES + 1]
    sampling = np.asarray(patterns.angular_sampling, np.float64)  # mrad per pixel (ky, kx)
    result = {"patterns": array, "thickness_nm": thickness_a / 10.0, "mrad_per_px": sampling}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **result)
    return result


def spot_list(sim) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """From a simulation: the direct beam (T,), spot angles (K, 2) mrad and intensities (T, K)."""
    patterns = sim["patterns"]
    t, gy, gx = patterns.shape
    cy, cx = gy // 2, gx // 2
    beam = patterns[:, cy, cx].copy()
    strength = patterns.max(axis=0)
    strength[cy, cx] = 0
    ky, kx = np.nonzero(strength > 1e-5)
    angles = np.stack([(ky - cy) * sim["mrad_per_px"][0], (kx - cx) * sim["mrad_per_px"][1]], axis=1)
    return beam, angles, patterns[:, ky, kx], sim["thickness_nm"]


def render_region(sim, rotation_deg: float, detector: int, disks: bool = False, vacuum: bool = False) -> dict:
    """Expected pattern templates (T, q, q) of a region (unit dose per pattern before noise)
    on the detector, spots rotated in plane, plus the beam share per plane."""
    beam, angles, intensity, thickness = spot_list(sim)
    theta = math.radians(rotation_deg)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    px_per_mrad = detector / (2 * MAX_ANGLE_MRAD)
    centre = (detector - 1) / 2
    positions = centre + (angles @ rot.T) * px_per_mrad  # (K, 2)
    keep = np.all((positions > 1) & (positions < detector - 2), axis=1)
    positions, intensity = positions[keep], intensity[:, keep]
    yy, xx = np.indices((detector, detector))
    r = np.hypot(yy - centre, xx - centre)
    radius = BEAM_RADIUS_FRAC * detector
    disc = np.clip(radius + 0.5 - r, 0, 1)
    disc /= disc.sum()
    if vacuum:  # no specimen: the unscattered beam alone
        return {"templates": np.repeat(disc[None], len(thickness), axis=0), "thickness_nm": thickness}
    if disks:  # each reflection a copy of the beam's disc
        shapes = np.stack([np.clip(radius + 0.5 - np.hypot(yy - py, xx - px), 0, 1).ravel() for py, px in positions])
        shapes /= np.maximum(shapes.sum(axis=1, keepdims=True), 1e-12)
        spots = (intensity @ shapes).reshape(-1, detector, detector)
    else:
        pix = np.arange(detector, dtype=np.float64)
        gy = np.exp(-0.5 * ((pix[None, :] - positions[:, 0:1]) / SPOT_SIGMA_PX) ** 2)  # (K, q)
        gx = np.exp(-0.5 * ((pix[None, :] - positions[:, 1:2]) / SPOT_SIGMA_PX) ** 2)
        norm = gy.sum(1) * gx.sum(1)
        spots = np.einsum("tk,ky,kx->tyx", intensity / norm[None, :], gy, gx)  # (T, q, q)
    halo = np.exp(-0.5 * (r / (HALO_SIGMA_FRAC * detector)) ** 2)
    halo /= halo.sum()
    halo_share = HALO_SHARE_MAX * thickness / thickness.max()
    templates = (1 - halo_share)[:, None, None] * (beam[:, None, None] * disc[None] + spots)
    templates += halo_share[:, None, None] * halo[None]
    templates /= templates.sum(axis=(1, 2), keepdims=True)
    return {"templates": templates, "thickness_nm": thickness}


# ------------------------------------------------------------------------------------ scans
def make_scan(cond: Condition, seed: int, cache: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """(data (ny, nx, q, q), labels (ny, nx) int32, info) for one condition and seed."""
    from scipy import ndimage

    rng = np.random.default_rng([seed, 7])
    ny, nx = cond.scan
    small = [s for s in (cond.band_share, cond.inclusion_share) if s > 0]
    labels = layouts.voronoi_grains((ny, nx), cond.n_grains, rng, min_share=max(small, default=0.02) * 1.6)
    # grains: in-plane rotations spread over the pattern's symmetry (90 degrees for [001]) and
    # tilts of a few mrad; the close pair shares a tilt and differs by close_degrees
    rotations = list(rng.permutation(np.linspace(0, 90, cond.n_grains, endpoint=False)) + rng.uniform(0, 90 / cond.n_grains))
    tilts = [tuple(np.round(rng.uniform(-8, 8, 2), 1)) for _ in range(cond.n_grains)]
    if cond.close_degrees > 0:
        rotations[1] = rotations[0] + cond.close_degrees
        tilts[1] = tilts[0]
    phases = [cond.phase] * cond.n_grains
    next_label = cond.n_grains
    if cond.band_share > 0:
        host = int(np.argmax(np.bincount(labels.ravel())))
        band = layouts.band(labels, host, cond.band_share, rng)
        labels = np.where(band, next_label, labels)
        rotations.append(rotations[host] + cond.band_degrees)
        tilts.append(tuple(np.round(np.asarray(tilts[host]) + rng.uniform(-3, 3, 2), 1)))
        phases.append(cond.phase)
        next_label += 1
    if cond.inclusion_share > 0:
        mask = layouts.inclusions(labels, cond.inclusion_share, 2, rng)
        labels = np.where(mask, next_label, labels)
        rotations.append(rng.uniform(0, 90))
        tilts.append((0.0, 0.0))
        phases.append(cond.inclusion_phase)
        next_label += 1
    amorphous = [False] * len(phases)
    if cond.amorphous:
        amorphous[cond.n_grains - 1] = True
    vacuum = []
    if cond.vacuum_share > 0:  # a strip along the first scan rows
        rows = max(1, round(cond.vacuum_share * ny))
        labels[:rows] = next_label
        vacuum = [next_label]
        phases.append(cond.phase)
        rotations.append(0.0)
        tilts.append((0.0, 0.0))
        amorphous.append(False)
        next_label += 1
    labels = labels.astype(np.int32)
    regions = [
        render_region(simulate(p, t, cache, a, cond.thickness_nm[1]), r, cond.detector, cond.disks, i in vacuum)
        for i, (p, t, r, a) in enumerate(zip(phases, tilts, rotations, amorphous))
    ]
    thickness = fields.thickness_map((ny, nx), *cond.thickness_nm, rng)
    drift = fields.drift_field((ny, nx), cond.drift, cond.drift_px, False, rng)
    q = cond.detector
    limit = 255 if cond.dtype == "uint8" else 65535
    data = np.empty((ny, nx, q, q), cond.dtype)
    for y in range(ny):
        for x in range(nx):
            region = regions[labels[y, x]]
            planes = region["thickness_nm"]
            t = float(np.clip(thickness[y, x], planes[0], planes[-1]))
            i = int(np.clip(np.searchsorted(planes, t) - 1, 0, len(planes) - 2))
            w = (t - planes[i]) / (planes[i + 1] - planes[i])
            pattern = (1 - w) * region["templates"][i] + w * region["templates"][i + 1]
            if cond.drift != "none":
                pattern = ndimage.shift(pattern, drift[y, x], order=1, mode="constant")
            data[y, x] = np.minimum(rng.poisson(np.maximum(pattern, 0) * cond.dose), limit)
    counts = data.reshape(ny * nx, -1).sum(axis=1, dtype=np.int64)
    # the truth numbered 0..k-1 over the regions present (the vacuum strip may cover a grain)
    labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int32)
    info = {
        "rotations_deg": [float(r) for r in rotations], "tilts_mrad": [list(map(float, t)) for t in tilts],
        "phases": phases, "shares": (np.bincount(labels.ravel()) / labels.size).round(4).tolist(),
        "counts_per_pattern": float(counts.mean()),
    }
    return data, labels, info


def run(cond: Condition, seed: int, cache: Path, sweep: bool) -> dict:
    import gpu4d
    from sklearn.metrics import adjusted_rand_score

    start = time.perf_counter()
    data, labels, info = make_scan(cond, seed, cache)
    made = time.perf_counter() - start
    k = int(labels.max()) + 1
    result = gpu4d.cluster(data, k)
    row = {"name": f"{cond.name}-s{seed}", "k": k, "ari": float(adjusted_rand_score(labels.ravel(), result.labels.ravel())),
           "smallest_share": min(info["shares"]), "counts": info["counts_per_pattern"], "generate_s": made, **info}
    if sweep:
        swept = gpu4d.sweep(data, range(2, max(12, k + 2) + 1))
        row["suggested_k"] = swept.suggested_k
        row["sweep_ari"] = float(adjusted_rand_score(labels.ravel(), swept[k].labels.ravel()))
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="conditions whose name contains this text")
    parser.add_argument("--half", choices=("tune", "holdout", "both"), default="both")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--cache", type=Path, default=HERE / ".abtem_cache")
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--seeds", type=lambda text: tuple(int(s) for s in text.split(",")), metavar="S1,S2",
                        help="fresh seeds instead of the halves' (half 'fresh'): scans no setting was tuned on")
    args = parser.parse_args(argv)
    try:
        import abtem  # noqa: F401
    except ImportError:
        parser.error("needs abTEM: pip install abtem, then pip install 'zarr>=2.16,<3' (see the docstring)")
    conditions = [c for c in CONDITIONS if args.only is None or args.only in c.name]
    if not conditions:
        parser.error(f"--only {args.only!r} matches no condition")
    start = time.perf_counter()
    rows = []
    halves = ("tune", "holdout") if args.half == "both" else (args.half,)
    if args.seeds:
        used = {seed for c in conditions for seed in (*c.seeds, *c.holdout_seeds)}
        if used & set(args.seeds):
            parser.error(f"--seeds {sorted(used & set(args.seeds))}: seeds of the tune or holdout half")
        halves = ("fresh",)
    seeds_of = {"tune": lambda c: c.seeds, "holdout": lambda c: c.holdout_seeds, "fresh": lambda c: args.seeds}
    for half in halves:
        for cond in conditions:
            for seed in seeds_of[half](cond):
                rows.append({"half": half, **run(cond, seed, args.cache, not args.no_sweep)})
                r = rows[-1]
                print(f"{r['half']:8s} {r['name']:24s} k={r['k']:2d} smallest {r['smallest_share']:.3f} counts {r['counts']:6.0f} "
                      f"ARI {r['ari']:.3f}" + (f"  suggested k {r['suggested_k']} (ARI at true k {r['sweep_ari']:.3f})" if "suggested_k" in r else ""),
                      flush=True)
    print()
    for half in halves:
        part = [r for r in rows if r["half"] == half]
        good = sum(r["ari"] >= GOOD_ARI for r in part)
        print(f"{half:8s}: ARI >= {GOOD_ARI} on {good}/{len(part)}, median {statistics.median(r['ari'] for r in part):.3f}", end="")
        if not args.no_sweep:
            print(f"; suggested k right on {sum(r['suggested_k'] == r['k'] for r in part)}/{len(part)}", end="")
        print()
    print(f"{time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
