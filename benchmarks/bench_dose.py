"""The dose below which a weak region is lost: ARI at the true k against counts per pattern.

    python benchmarks/bench_dose.py                                 # both generators, 6 seeds
    python benchmarks/bench_dose.py --generator synthetic --seeds 4 --doses 400,800

``bench_quality.py`` asks whether the defaults find the map on a fixed set of scans; this asks
where they stop finding it. One scan layout per generator, the weakest region of each a planar
defect of 3-5% of the patterns (``gpu4d.synthetic``'s twin lamella, whose patterns hold their
host's spots at three quarters of their intensity plus the twin's spots at a quarter; a diffsims
twin band of 3% of the patterns, of the host's phase), is rendered at each dose with several
generator seeds (not those of ``bench_quality.py``'s catalogue or of the tests). Every scan is
clustered with ``gpu4d.cluster(data, true_k)`` at default settings. Per dose it prints how many
scans reach ARI >= 0.95, the median ARI, and on how many the defect was found (a cluster whose
F1 score against the defect's patterns is >= 0.8). Everything runs in this process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from quality import diffsims_scans, synthetic_scans  # noqa: E402

GOOD_ARI = 0.95
FOUND_F1 = 0.8
#: Generator seeds: away from the catalogue's (7919 * i [+ 104729]) and the tests' (0-200).
FIRST_SEED = 5_000_003
#: The layout of each generator (its dose is set per row); the defect is the last label.
LAYOUTS = {
    "synthetic": (synthetic_scans, dict(scan=(56, 56), detector=64, n_grains=4, dtype="uint8")),
    "diffsims": (diffsims_scans, dict(phase="Al", scan=(56, 56), detector=64, n_grains=4, band_share=0.03,
                                      dtype="uint8", drift="linear", drift_px=1.0)),
}
DEFAULT_DOSES = (100, 200, 400, 800, 1600, 3200)


def defect_f1(truth: np.ndarray, labels: np.ndarray, defect: int) -> float:
    """The best F1 of any cluster against the defect's patterns."""
    mine = truth == defect
    best = 0.0
    for c in np.unique(labels):
        theirs = labels == c
        both = float(np.sum(mine & theirs))
        if both:
            best = max(best, 2 * both / (mine.sum() + theirs.sum()))
    return best


def run(generator: str, doses, seeds: int) -> list[dict]:
    import gpu4d
    from sklearn.metrics import adjusted_rand_score

    module, layout = LAYOUTS[generator]
    rows = []
    for dose in doses:
        for i in range(seeds):
            data, labels, _ = module.make(FIRST_SEED + i, **{**layout, "dose": float(dose)})
            truth = labels.ravel()
            k = int(truth.max()) + 1
            start = time.perf_counter()
            result = gpu4d.cluster(data, k)
            found = result.labels.ravel()
            rows.append({
                "generator": generator, "dose": dose, "seed": FIRST_SEED + i,
                "counts": float(data.reshape(truth.size, -1).sum(axis=1, dtype=np.int64).mean()),
                "ari": float(adjusted_rand_score(truth, found)),
                "defect_f1": defect_f1(truth, found, k - 1),
                "defect_share": float(np.mean(truth == k - 1)),
                "seconds": time.perf_counter() - start,
            })
    return rows


def print_rows(rows: list[dict]) -> None:
    print(f"{'generator':10s} {'dose':>6s} {'counts':>8s} {'ARI>=0.95':>10s} {'median ARI':>11s} {'defect found':>13s}")
    for generator in dict.fromkeys(r["generator"] for r in rows):
        for dose in dict.fromkeys(r["dose"] for r in rows if r["generator"] == generator):
            group = [r for r in rows if r["generator"] == generator and r["dose"] == dose]
            good = sum(r["ari"] >= GOOD_ARI for r in group)
            found = sum(r["defect_f1"] >= FOUND_F1 for r in group)
            counts = statistics.mean(r["counts"] for r in group)
            median = statistics.median(r["ari"] for r in group)
            print(f"{generator:10s} {dose:6.0f} {counts:8.0f} {good:>6d}/{len(group):<3d} {median:11.3f} {found:>9d}/{len(group):<3d}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generator", choices=sorted(LAYOUTS), help="one generator only")
    parser.add_argument("--doses", default=",".join(map(str, DEFAULT_DOSES)),
                        help="detected counts per pattern asked of the generator, comma separated")
    parser.add_argument("--seeds", type=int, default=6, help="scans per generator and dose")
    args = parser.parse_args(argv)
    try:
        doses = [float(d) for d in args.doses.split(",") if d.strip()]
    except ValueError:
        parser.error(f"--doses {args.doses!r} should be numbers separated by commas, e.g. 400,800")
    if not doses or min(doses) <= 0 or args.seeds < 1:
        parser.error("--doses should be positive and --seeds >= 1")
    start = time.perf_counter()
    rows = []
    for generator in [args.generator] if args.generator else list(LAYOUTS):
        rows += run(generator, doses, args.seeds)
    print_rows(rows)
    print(f"\n{time.perf_counter() - start:.0f} s; 'counts' is the mean measured counts per pattern "
          f"(uint8 data: counts times the camera gain)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
