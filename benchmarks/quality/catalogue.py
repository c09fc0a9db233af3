"""The benchmark's scans: names, generators, seeds, halves, and a cache of generated scans.

Every condition is generated twice, with different seeds and slightly different settings: one
copy for the ``tune`` half, one for the ``holdout`` half, so both halves span the same
generators and difficulties. Generated scans are cached as ``NAME/data.npy``,
``NAME/labels.npy`` and ``NAME/info.json`` (generator parameters, seed, measured dose, region
shares...); a changed spec regenerates its scan.

Generate the missing scans (the benchmark does this in a child process)::

    python -m quality.catalogue --cache benchmarks/.quality_cache [--only NAME] [--seed-offset N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

GENERATORS = ("synthetic", "diffsims")
HALVES = ("tune", "holdout")
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / ".quality_cache"
#: Bump a generator's number to regenerate its cached scans (its code changed).
GENERATOR_VERSIONS = {"synthetic": 1, "diffsims": 3}


@dataclass(frozen=True)
class ScanSpec:
    name: str
    generator: str
    half: str
    seed: int
    params: dict = field(hash=False)

    def key(self) -> str:
        """A digest of everything that decides the scan's content."""
        text = json.dumps([GENERATOR_VERSIONS[self.generator], self.generator, self.seed, self.params], sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _pair(i: int, generator: str, name: str, tune: dict, holdout_changes: dict) -> list[ScanSpec]:
    """The tune copy and the holdout copy (other seed, a few settings changed) of a condition."""
    prefix = "syn" if generator == "synthetic" else "ds"
    base = 7919 * (i + 1) + (0 if generator == "synthetic" else 104729)
    return [
        ScanSpec(f"{prefix}-{name}-t", generator, "tune", base, dict(tune)),
        ScanSpec(f"{prefix}-{name}-h", generator, "holdout", base + 1, {**tune, **holdout_changes}),
    ]


SYNTHETIC = [
    ("basic", dict(scan=(64, 64), detector=64, n_grains=3, dose=2000), dict(dose=1500)),
    ("drift8bit", dict(scan=(64, 64), detector=96, n_grains=5, drift_px=1.0, dose=800, dtype="uint8"), dict(drift_px=1.2, dose=1000)),
    ("many", dict(scan=(80, 80), detector=64, n_grains=7, drift_px=2.0, dose=5000, hot=3), dict(scan=(72, 72), dose=4000, hot=0, dead=4)),
    ("three", dict(scan=(48, 48), detector=128, n_grains=2, drift_px=0.5, dose=500, dtype="uint8"), dict(scan=(56, 56), dose=600)),
    ("ten", dict(scan=(96, 96), detector=64, n_grains=9, drift_px=1.5, dose=3000), dict(scan=(88, 88), dose=2500)),
    ("flat", dict(scan=(64, 64), detector=64, n_grains=6, defect=False, thickness_gradient=False, drift_px=2.0, dose=1500, dtype="uint8", dead=5), dict(n_grains=5, dead=0, hot=2)),
    ("det256", dict(scan=(32, 32), detector=256, n_grains=4, drift_px=1.0, dose=5000), dict(n_grains=3, drift_px=0.8)),
    ("lowdose", dict(scan=(64, 64), detector=64, n_grains=4, dose=400, dtype="uint8"), dict(dose=300, drift_px=0.6)),
    # seed-sized scans (more than 16,384 patterns): the sketch finds its axes on a tiled quarter
    ("seedsize", dict(scan=(181, 172), detector=64, n_grains=4, drift_px=1.0, dose=1500, dtype="uint8"), dict(dose=1200, drift_px=1.5)),
    # a detector that adds a dark level (pedestal) to every pixel, written without dark subtraction
    ("pedestal", dict(scan=(64, 64), detector=64, n_grains=4, dose=1500, pedestal=100.0), dict(pedestal=40.0, drift_px=1.0, dose=1200)),
    # cosmic-ray or X-ray spikes in a tenth (a fifth) of the frames; added after gpu4d.spikes was written
    ("spikes", dict(scan=(64, 64), detector=64, n_grains=5, dose=1500, spike_share=0.1, spike_counts=3000.0),
     dict(spike_share=0.2, spike_counts=1000.0, spike_size=2, drift_px=1.0, dtype="uint8")),
]

DIFFSIMS = [
    ("al-twin", dict(phase="Al", n_grains=5, band_share=0.03, dose=1000), dict(phase="Cu", band_share=0.025)),
    ("cu-lowangle", dict(phase="Cu", detector=96, n_grains=4, close_pairs=1, misorientation_deg=3.0, band_share=0.025, drift="linear", drift_px=1.5, dose=200, dtype="uint8"),
     dict(phase="Au", misorientation_deg=2.5, dose=250)),
    ("fe-incl", dict(phase="Fe", scan=(80, 80), n_grains=6, inclusion_phase="MgO", inclusion_share=0.03, inclusion_count=2, drift="curved", drift_px=2.0, dose=3000, hot=3, dead=3),
     dict(scan=(72, 72), inclusion_phase="Si", inclusion_share=0.035, inclusion_count=3, dose=2500)),
    ("ti-lowdose", dict(phase="Ti", scan=(48, 48), detector=128, n_grains=3, band_share=0.04, drift="linear", drift_px=2.0, drift_integer=True, dose=50, dtype="uint8", thickness_nm=(30.0, 130.0)),
     dict(phase="Mg", band_share=0.045, dose=60)),
    ("si", dict(phase="Si", n_grains=7, band_share=0.02, drift="curved", drift_px=1.0, drift_integer=True, dose=500), dict(band_share=0.022, dose=400)),
    ("mgo-pairs", dict(phase="MgO", detector=96, n_grains=5, close_pairs=2, misorientation_deg=4.0, inclusion_phase="Au", inclusion_share=0.04, inclusion_count=1, drift="linear", drift_px=0.7, dose=100, dtype="uint8", hot=2),
     dict(misorientation_deg=3.5, dose=120, drift_px=0.9)),
    ("rutile-dyn", dict(phase="TiO2", scan=(56, 56), n_grains=5, band_share=0.03, drift="curved", drift_px=2.0, dose=5000, dynamical=0.3), dict(scan=(60, 60), dose=4000)),
    ("u-ten", dict(phase="U", n_grains=8, band_share=0.02, inclusion_phase="Fe", inclusion_share=0.025, inclusion_count=2, drift="linear", drift_px=1.0, dose=2000),
     dict(dose=1500, drift="curved")),
    ("mg-det256", dict(phase="Mg", scan=(32, 32), detector=256, n_grains=3, band_share=0.05, drift="curved", drift_px=1.5, dose=5000), dict(phase="Ti", band_share=0.045, dose=4000)),
    ("two-phase", dict(phase="Al", second_phase="Si", n_second=2, n_grains=6, band_share=0.035, close_pairs=1, misorientation_deg=2.0, dose=300, dtype="uint8", dead=4, dynamical=0.2, precession_deg=1.0, thickness_nm=(25.0, 125.0)),
     dict(phase="Cu", second_phase="Fe", misorientation_deg=2.5)),
    ("seedsize", dict(phase="Cu", scan=(181, 172), n_grains=5, band_share=0.03, inclusion_phase="MgO", inclusion_share=0.025, inclusion_count=2, drift="curved", drift_px=1.0, dose=800, dtype="uint8"),
     dict(phase="Fe", inclusion_phase="Au", dose=600)),
    # a CMOS-like camera: 30 counts per electron, a pedestal of ~1,000 and read noise
    ("cmos", dict(phase="Cu", n_grains=5, band_share=0.03, dose=1500, gain=30.0, pedestal=1000.0, read_noise=10.0),
     dict(phase="Au", dose=1200, pedestal=800.0, read_noise=8.0, drift="linear", drift_px=1.0)),
    # an integrating camera with X-ray hits in 5% (10%) of the frames; added after gpu4d.spikes was written
    ("xray", dict(phase="Fe", n_grains=5, band_share=0.03, dose=1000, gain=20.0, pedestal=200.0, read_noise=5.0, spike_share=0.05, spike_counts=30000.0, spike_size=3),
     dict(phase="Al", spike_share=0.1, spike_counts=20000.0, spike_size=2, drift="linear", drift_px=1.0)),
]

SCANS: list[ScanSpec] = [
    spec
    for generator, conditions in (("synthetic", SYNTHETIC), ("diffsims", DIFFSIMS))
    for i, (name, tune, holdout) in enumerate(conditions)
    for spec in _pair(i, generator, name, tune, holdout)
]


def select(half: str = "both", only: str | None = None, generator: str | None = None, seed_offset: int = 0) -> list[ScanSpec]:
    """The scans of a half (``tune``, ``holdout`` or ``both``), a generator, a name substring.

    ``seed_offset`` != 0: fresh copies of those conditions, every seed shifted by it and every
    name ending in ``-sOFFSET``: scans no setting was tuned on (a third sample of each
    condition, to see whether the two halves' numbers hold on other seeds)."""
    if half not in (*HALVES, "both"):
        raise ValueError(f"half={half!r} should be tune, holdout or both")
    if generator is not None and generator not in GENERATORS:
        raise ValueError(f"generator={generator!r} should be one of {GENERATORS}")
    specs = [
        replace(s, name=f"{s.name}-s{seed_offset}", seed=s.seed + seed_offset) if seed_offset else s
        for s in SCANS
    ]
    if seed_offset and {(s.generator, s.seed) for s in specs} & {(s.generator, s.seed) for s in SCANS}:
        raise ValueError(f"seed_offset={seed_offset} gives seeds of the tune or holdout half; try 5003")
    return [
        s for s in specs
        if (half == "both" or s.half == half) and (generator is None or s.generator == generator)
        and (only is None or only in s.name)
    ]


def generate(spec: ScanSpec) -> tuple[np.ndarray, np.ndarray, dict]:
    """Generate one scan and measure what it holds (region shares, dose, drift)."""
    if spec.generator == "synthetic":
        from . import synthetic_scans as module
    else:
        from . import diffsims_scans as module
    start = time.perf_counter()
    data, labels, info = module.make(spec.seed, **spec.params)
    shares = np.bincount(labels.ravel()) / labels.size
    bad = info["bad_pixels"]
    good = np.ones(data.shape[2:], bool)
    for y, x in bad["hot"] + bad["dead"]:
        good[y, x] = False
    counts = data[:, :, good].sum(axis=-1, dtype=np.int64)
    info.update(
        name=spec.name, generator=spec.generator, half=spec.half, seed=spec.seed, key=spec.key(),
        scan_shape=list(labels.shape), detector_shape=list(data.shape[2:]), dtype=data.dtype.name,
        n_regions=int(len(shares)), region_shares=[round(float(s), 5) for s in shares],
        smallest_share=float(shares.min()), counts_per_pattern=float(counts.mean()),
        counts_per_pattern_range=[float(counts.min()), float(counts.max())],
        seconds=round(time.perf_counter() - start, 2),
    )
    return data, labels, info


def cached(spec: ScanSpec, cache: Path) -> bool:
    """Whether ``cache`` holds this exact scan."""
    try:
        return json.loads((cache / spec.name / "info.json").read_text())["key"] == spec.key()
    except (OSError, ValueError, KeyError):
        return False


def save(spec: ScanSpec, cache: Path) -> dict:
    data, labels, info = generate(spec)
    folder = cache / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "data.npy", data)
    np.save(folder / "labels.npy", labels)
    # info.json last: its key marks the folder complete
    tmp = folder / "info.json.tmp"
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, folder / "info.json")
    return info


def load(spec: ScanSpec, cache: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(data, labels, info)`` of a cached scan."""
    folder = cache / spec.name
    info = json.loads((folder / "info.json").read_text())
    return np.load(folder / "data.npy"), np.load(folder / "labels.npy"), info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Generate the quality benchmark's scans into a cache.")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--half", default="both")
    parser.add_argument("--only")
    parser.add_argument("--generator")
    parser.add_argument("--seed-offset", type=int, default=0, help="fresh copies: every seed shifted by this")
    parser.add_argument("--force", action="store_true", help="regenerate cached scans too")
    args = parser.parse_args(argv)
    for spec in select(args.half, args.only, args.generator, args.seed_offset):
        if not args.force and cached(spec, args.cache):
            continue
        info = save(spec, args.cache)
        print(
            f"{spec.name:22s} {info['seconds']:6.1f} s  regions {info['n_regions']:2d}  smallest "
            f"{info['smallest_share']:.3f}  counts {info['counts_per_pattern']:7.0f}  oracle error "
            f"{info['oracle_error']}", flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
