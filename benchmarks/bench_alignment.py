"""Clustering quality against descan drift: what alignment buys.

    python benchmarks/bench_alignment.py                 # 48x48 scans, 96x96 detector
    python benchmarks/bench_alignment.py --scan 64 --detector 128 --seeds 3

For synthetic scans with descan drift 0, 1, 2 and 3 px and two dose levels, prints the adjusted
Rand index against the ground truth of:

* original: the paper's method (no mask, max normalization, KMeans);
* mask: gpu4d with the auto beam mask;
* mask+align: gpu4d with the mask and alignment (align=True, the robust descan fit);
* mask+align+sqrt: the same with the sqrt intensity transform.

Each cell is the mean over the seeds (held out: the demo uses seed 7).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

VARIANTS = {
    "original": dict(mask="none", normalize="max"),
    "mask": dict(mask="auto"),
    "mask+align": dict(mask="auto", align=True),
    "mask+align+sqrt": dict(mask="auto", align=True, transform="sqrt"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", type=int, default=48, help="scan side (default 48)")
    parser.add_argument("--detector", type=int, default=96, help="detector side (default 96)")
    parser.add_argument("--seeds", type=int, default=2, help="scans per cell (default 2)")
    parser.add_argument("--drifts", default="0,1,2,3", help="drift amplitudes in px")
    parser.add_argument("--doses", default="low,default", help="dose levels: low = 1/5 of default")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from sklearn.metrics import adjusted_rand_score

    import gpu4d
    from gpu4d.synthetic import DEFAULT_DOSE, make_scan

    args = parse_args(argv)
    drifts = [float(d) for d in args.drifts.split(",")]
    doses = {"low": DEFAULT_DOSE / 5, "default": DEFAULT_DOSE}
    print(f"scan {args.scan}x{args.scan}, detector {args.detector}x{args.detector}, {args.seeds} seeds per cell")
    print(f"{'dose':8s} {'drift px':>8s} " + " ".join(f"{name:>16s}" for name in VARIANTS))
    start = time.perf_counter()
    for dose_name in args.doses.split(","):
        for drift in drifts:
            scores = {name: [] for name in VARIANTS}
            for seed in range(100, 100 + args.seeds):
                scan = make_scan(
                    scan_shape=(args.scan, args.scan), detector_shape=(args.detector, args.detector),
                    drift_px=drift, dose=doses[dose_name], seed=seed,
                )
                for name, options in VARIANTS.items():
                    result = gpu4d.cluster(scan.data, scan.n_regions, random_state=0, **options)
                    scores[name].append(adjusted_rand_score(scan.labels.ravel(), result.labels.ravel()))
            cells = " ".join(f"{np.mean(v):16.3f}" for v in scores.values())
            print(f"{dose_name:8s} {drift:8.1f} {cells}", flush=True)
    print(f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
