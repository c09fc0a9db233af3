"""Map quality at defaults under what real detectors and scans add to clean counts.

Each effect is applied to diffsims scans (``quality.diffsims_scans``: 5 Cu grains and a 3% twin
band, 1,500 counts per pattern, 64x64 patterns of 64x64 px; seeds of their own, in no other
benchmark and in none of the tuning) and ``gpu4d.sweep(data, 2..11)`` runs at its defaults. Per
scan: the ARI at the true k, the suggested k and the detector offset found. The clean scans are
the baseline of the same run; the pedestal effects are also run with ``offset="none"`` (what
gpu4d did before it subtracted offsets), the spikes with ``spikes=False`` (before it replaced
them).

    python benchmarks/bench_detector_effects.py [--seeds 9101 9102] [--json FILE]

About 1 minute on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

BASE = dict(phase="Cu", n_grains=5, band_share=0.03, dose=1500)


def _readout(data, rng, gain=1.0, pedestal=0.0, read_noise=0.0):
    """Counts read by an integrating detector (``quality.render.detector_response``)."""
    from quality import render

    return render.detector_response(data, gain, pedestal, read_noise, rng)


def _shift_columns(data, shifts):
    """Flyback: the first scan columns of every row see the beam moved by ``shifts`` px."""
    from scipy import ndimage

    out = data.copy()
    for column, shift in enumerate(shifts):
        moved = ndimage.shift(data[:, column].astype(np.float32), (0, shift, -0.5 * shift), order=1, mode="nearest")
        out[:, column] = np.clip(np.rint(moved), 0, np.iinfo(data.dtype).max)
    return out


def _spikes(data, rng, share=0.02, value=5000, size=1):
    """Cosmic-ray or X-ray spikes: a very bright ``size`` x ``size`` blob in ``share`` of the frames."""
    out = data.copy()
    frames = out.reshape(-1, *data.shape[2:])
    for index in rng.choice(len(frames), int(share * len(frames)), replace=False):
        y, x = rng.integers(0, data.shape[2] - size + 1, 2)
        frames[index, y : y + size, x : x + size] = value
    return out


def _hot_line(data, rng, axis: int, level: float):
    out = data.copy()
    if axis == 0:
        out[:, :, 10, :] = rng.poisson(level, out[:, :, 10, :].shape)
    else:
        out[:, :, :, 10] = rng.poisson(level, out[:, :, :, 10].shape)
    return out


def _beam_current(data, rng):
    """The beam current of each scan row between 75% and 125% of the mean (thinned counts)."""
    factor = rng.uniform(0.6, 1.0, data.shape[0])[:, None, None, None]
    return rng.binomial(data.astype(np.int64), factor).astype(data.dtype)


EFFECTS = {
    "clean counts (baseline)": lambda d, rng: d,
    "pedestal 20": lambda d, rng: _readout(d, rng, pedestal=20.0),
    "pedestal 100": lambda d, rng: _readout(d, rng, pedestal=100.0),
    "CMOS: 30/e, pedestal 1000, read noise 10": lambda d, rng: _readout(d, rng, 30.0, 1000.0, 10.0),
    "flat-field gain 0.8-1.2": lambda d, rng: rng.poisson(d * rng.uniform(0.8, 1.2, d.shape[2:])).astype(d.dtype),
    "hot detector row (30 counts)": lambda d, rng: _hot_line(d, rng, 0, 30.0),
    "hot detector column (200 counts)": lambda d, rng: _hot_line(d, rng, 1, 200.0),
    "beam current +-25% per scan row": _beam_current,
    "flyback: columns 0-2 off by 4/2.5/1 px": lambda d, rng: _shift_columns(d, (4.0, 2.5, 1.0)),
    "spikes in 2% of frames": _spikes,
    "spikes in 10% of frames": lambda d, rng: _spikes(d, rng, 0.1),
    "500-count spikes in 10% of frames": lambda d, rng: _spikes(d, rng, 0.1, 500),
    "3x3 spikes in 30% of frames": lambda d, rng: _spikes(d, rng, 0.3, 1000, 3),
}
#: Effects also run without the correction made for them, as gpu4d ran before it made it.
UNCORRECTED = {
    "pedestal 20": ("offset none", {"offset": "none"}),
    "pedestal 100": ("offset none", {"offset": "none"}),
    "CMOS: 30/e, pedestal 1000, read noise 10": ("offset none", {"offset": "none"}),
    "spikes in 2% of frames": ("spikes kept", {"spikes": False}),
    "spikes in 10% of frames": ("spikes kept", {"spikes": False}),
    "500-count spikes in 10% of frames": ("spikes kept", {"spikes": False}),
    "3x3 spikes in 30% of frames": ("spikes kept", {"spikes": False}),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[9101, 9102])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    import gpu4d
    from gpu4d.scores import adjusted_rand_index
    from quality import diffsims_scans

    rows = []
    start = time.perf_counter()
    print(f"{'effect':42s} {'seed':>5s} {'offset':>7s} {'ARI':>6s} {'k':>3s} {'truth':>5s}")
    for seed in args.seeds:
        data, labels, _ = diffsims_scans.make(seed, **BASE)
        k = int(labels.max()) + 1
        for name, effect in EFFECTS.items():
            scan = effect(data, np.random.default_rng([seed, len(name)]))
            runs = [("", {})] + ([UNCORRECTED[name]] if name in UNCORRECTED else [])
            for label, options in runs:
                swept = gpu4d.sweep(scan, range(2, 12), **options)
                row = {
                    "effect": f"{name} ({label})" if label else name, "seed": seed, "default": not label,
                    "offset_found": swept[k].mask.detector_offset,
                    "ari": adjusted_rand_index(labels, swept[k].labels), "suggested_k": swept.suggested_k, "true_k": k,
                }
                rows.append(row)
                print(f"{row['effect'][:42]:42s} {seed:5d} {row['offset_found']:7g} {row['ari']:6.3f} "
                      f"{row['suggested_k']:3d} {k:5d}", flush=True)
    good = [r for r in rows if r["default"]]
    print(f"\nat defaults: ARI >= 0.95 on {sum(r['ari'] >= 0.95 for r in good)}/{len(good)}, "
          f"suggested k right on {sum(r['suggested_k'] == r['true_k'] for r in good)}/{len(good)}; "
          f"{time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
