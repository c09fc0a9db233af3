"""gpu4d cluster against the original method on the seed-sized scan, in the same run.

    python benchmarks/bench_cluster.py                   # 181x172 scan, 144x144 uint8, k = 6
    python benchmarks/bench_cluster.py --scan 90x86 -k 6 # a quicker, smaller run

Writes the synthetic scan once as a NanoMegas .blo (cached in --workdir), then runs each method
in its own process and prints wall time, peak resident memory (the process's own maxrss) and the
ratios gpu4d / original (gpu4d runs ``--repeat`` times, the median compared, the range shown). The original method is the paper's: HyperSpy load, reshape to float32,
zero a disc over the direct beam, ``sklearn.preprocessing.normalize(norm="max")``,
``sklearn.cluster.KMeans`` with its default parameters (same k and seed). gpu4d runs with its
defaults too (10 trial initialisations, see ``gpu4d.kmeans.full``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", default="181x172", help="scan shape NYxNX (default 181x172)")
    parser.add_argument("--detector", type=int, default=144)
    parser.add_argument("-k", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3, help="gpu4d runs; the median is compared (3)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "gpu4d-bench"))
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def make_blo(args) -> tuple[Path, Path]:
    """The benchmark scan as .blo plus its ground truth labels, generated once."""
    from gpu4d.synthetic import make_scan, write_blo

    ny, nx = (int(v) for v in args.scan.lower().split("x"))
    folder = Path(args.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    blo = folder / f"scan_{ny}x{nx}_{args.detector}.blo"
    truth = blo.with_suffix(".truth.npy")
    if not (blo.exists() and truth.exists()):
        print(f"writing {blo} ...", flush=True)
        scan = make_scan(
            scan_shape=(ny, nx), detector_shape=(args.detector, args.detector),
            n_grains=5, defect=True, dtype="uint8", seed=11,
        )
        write_blo(blo, scan.data)
        import numpy as np

        np.save(truth, scan.labels)
    return blo, truth


def child_original(blo: str, k: int, out: str) -> None:
    """The original method, as in the paper (plus the beam mask)."""
    import hyperspy.api as hs
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import normalize

    from gpu4d.masks import find_beam

    data = hs.load(blo).data
    ny, nx, qy, qx = data.shape
    matrix = data.reshape(ny * nx, qy * qx).astype(np.float32)
    beam = find_beam(matrix.mean(axis=0).reshape(qy, qx))
    yy, xx = np.indices((qy, qx))
    disc = np.hypot(yy - beam["centre"][0], xx - beam["centre"][1]) <= beam["mask_radius"]
    matrix[:, disc.ravel()] = 0
    matrix = normalize(matrix, norm="max")
    labels = KMeans(k, random_state=0).fit(matrix).labels_
    np.save(out, labels.reshape(ny, nx))


def child_gpu4d(blo: str, k: int, out: str) -> None:
    from gpu4d.cli import main

    status = main(["cluster", blo, "-k", str(k), "--mask", "auto", "--out", out, "--overwrite", "-q", "--no-figures"])
    if status:
        raise SystemExit(status)


def run_child(method: str, blo: Path, k: int, out: Path) -> dict:
    command = [sys.executable, __file__, "--child", method, str(blo), str(k), str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{method} failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["wall_s"] = wall
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.prepare_only:
        make_blo(args)
        return 0
    if args.child:
        method, blo, k, out = args.child
        {"original": child_original, "gpu4d": child_gpu4d}[method](blo, int(k), out)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({"peak_bytes": peak}))
        return 0

    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    # generate in a child process: on Linux a child's peak RSS starts from its parent's at
    # fork, so a parent that generated the scan would inflate both methods' peak memory
    subprocess.run([sys.executable, __file__, "--scan", args.scan, "--detector", str(args.detector),
                    "--workdir", args.workdir, "--prepare-only"], check=True)
    blo, truth_path = make_blo(args)
    truth = np.load(truth_path)
    work = Path(args.workdir)
    original = run_child("original", blo, args.k, work / "original_labels.npy")
    runs = sorted((run_child("gpu4d", blo, args.k, work / "gpu4d_result") for _ in range(args.repeat)),
                  key=lambda r: r["wall_s"])
    ours = dict(runs[len(runs) // 2], peak_bytes=max(r["peak_bytes"] for r in runs))
    ari_original = adjusted_rand_score(truth.ravel(), np.load(work / "original_labels.npy").ravel())
    ari_ours = adjusted_rand_score(truth.ravel(), np.load(work / "gpu4d_result" / "labels.npy").ravel())
    print(f"scan {args.scan}, detector {args.detector}x{args.detector} uint8, k = {args.k}")
    print(f"{'method':10s} {'wall s':>8s} {'peak MB':>9s} {'ARI':>6s}")
    for name, report, ari in (("original", original, ari_original), ("gpu4d", ours, ari_ours)):
        print(f"{name:10s} {report['wall_s']:8.2f} {report['peak_bytes'] / 1e6:9.0f} {ari:6.3f}")
    walls = ", ".join(f"{r['wall_s']:.2f}" for r in runs)
    print(f"gpu4d runs: {walls} s (the median above)")
    print(
        f"ratio gpu4d/original: wall {ours['wall_s'] / original['wall_s']:.2f} "
        f"({original['wall_s'] / ours['wall_s']:.1f}x faster; range "
        f"{original['wall_s'] / runs[-1]['wall_s']:.1f}-{original['wall_s'] / runs[0]['wall_s']:.1f}x), "
        f"peak memory {ours['peak_bytes'] / original['peak_bytes']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
