"""GPU benchmark on the seed-sized scan (181x172 positions, 144x144 uint8 patterns).

Run on a machine with a CUDA GPU (``benchmarks/gpu_check.sh`` runs it after the GPU tests):

    python benchmarks/bench_gpu.py                      # k = 4..12, scan written to /tmp
    python benchmarks/bench_gpu.py --k 6 --scan 90x86 --data /tmp/small.npy

The synthetic scan (``gpu4d.synthetic.make_scan``) is written once as ``.npy`` (with its
ground-truth labels beside it) and read from there, memory-mapped, as a user's file would be.
For each k it prints the stages of ``gpu4d.cluster`` (read + transfer + preprocess, KMeans,
mean-pattern pass) in seconds and patterns/s, next to what ``benchmarks/ROOFLINE.md`` expects on
an H100-class GPU (``EXPECTED_S``); then ``gpu4d.sweep`` over the same ks, and the CPU backend
for the first k in the same run. Without a usable GPU it says why in one line and exits 1: it
never reports CPU or simulator numbers as GPU numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

#: ROOFLINE.md's expectations for the seed-sized scan on an H100/H200 (seconds, upper end of
#: its ranges): stage -> (seconds at k = 6, how it grows with k). KMeans includes the n_init
#: subsample trials and the final full fit (ROOFLINE.md, "KMeans on the GPU").
EXPECTED_S = {
    "preprocess": (0.25, "flat"),  # page cache -> pinned -> device -> kernel
    "kmeans": (0.3, "linear"),  # memory-bound GEMMs: about proportional to k for k <= 12
    "mean_patterns": (0.05, "flat"),
    "total": (0.6, "kmeans"),
}
SWEEP_EXPECTED_S = 2.0  # 4 streamed passes (~0.1 s each) + reduced-space KMeans of 9 ks (ROOFLINE.md)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", default="181x172", help="scan shape NYxNX (default 181x172)")
    parser.add_argument("--detector", type=int, default=144, help="detector side (default 144)")
    parser.add_argument("--k", default="4:12", help="k or a range K1:K2 (default 4:12)")
    parser.add_argument("--data", default="/tmp/gpu4d-bench/seed.npy", help="the scan as .npy (made if absent)")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU reference run")
    parser.add_argument("--no-sweep", action="store_true", help="skip gpu4d.sweep")
    return parser.parse_args(argv)


def expected(stage: str, k: int) -> float:
    seconds, growth = EXPECTED_S[stage]
    if growth == "linear":
        return seconds * k / 6
    if growth == "kmeans":
        return seconds + EXPECTED_S["kmeans"][0] * (k - 6) / 6
    return seconds


def scan_file(path: Path, ny: int, nx: int, side: int) -> Path:
    """The scan as ``.npy`` (and its labels as ``*.labels.npy``), generated if absent."""
    import numpy as np

    labels = path.with_suffix(".labels.npy")
    if path.is_file() and labels.is_file():
        data = np.load(path, mmap_mode="r")
        if data.shape == (ny, nx, side, side):
            return path
    from gpu4d.synthetic import make_scan

    start = time.perf_counter()
    scan = make_scan(scan_shape=(ny, nx), detector_shape=(side, side), n_grains=5, defect=True,
                     dtype="uint8", seed=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, scan.data)
    np.save(labels, scan.labels)
    print(f"generated {path} ({scan.data.nbytes / 1e6:.0f} MB) in {time.perf_counter() - start:.1f} s")
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    from gpu4d.backend import gpu_problem

    problem = gpu_problem()
    if problem is not None:
        print(f"bench_gpu: no usable GPU here ({problem}); nothing measured.", file=sys.stderr)
        return 1

    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    import gpu4d

    ny, nx = (int(v) for v in args.scan.lower().split("x"))
    first, _, last = args.k.partition(":")
    ks = list(range(int(first), int(last or first) + 1))
    path = scan_file(Path(args.data), ny, nx, args.detector)
    truth = np.load(path.with_suffix(".labels.npy"))
    n = ny * nx
    np.load(path).sum()  # into the page cache, as every run after the first finds it

    start = time.perf_counter()
    warm = gpu4d.cluster(np.load(path, mmap_mode="r")[:8], 2, backend="gpu")  # CUDA, kernels, cuML
    print(f"{warm.backend_description}\nwarm-up (CUDA context, kernel compilation): {time.perf_counter() - start:.1f} s")
    print(f"{n} patterns of {args.detector}x{args.detector}; seconds per stage, (expected: ROOFLINE.md)")
    header = f"{'k':>3} {'total':>14} {'preprocess':>14} {'kmeans':>14} {'mean pass':>14} {'n_iter':>6} {'ARI':>6}"
    print(header)
    worst = 0.0
    for k in ks:
        start = time.perf_counter()
        result = gpu4d.cluster(str(path), k, backend="gpu", mask="auto")
        total = time.perf_counter() - start
        t = dict(result.timings, total=total)
        cells = []
        for stage in ("total", "preprocess", "kmeans", "mean_patterns"):
            want = expected(stage, k)
            worst = max(worst, t[stage] / want)
            cells.append(f"{t[stage]:6.3f} ({want:5.2f})")
        ari = adjusted_rand_score(truth.ravel(), result.labels.ravel())
        print(f"{k:3d} {' '.join(cells)} {result.n_iter:6d} {ari:6.3f}")
    t = result.timings
    print(f"patterns/s at k={ks[-1]}: preprocess {n / t['preprocess']:.3g}, kmeans {n / t['kmeans']:.3g}, "
          f"mean pass {n / t['mean_patterns']:.3g}")

    if not args.no_sweep:
        start = time.perf_counter()
        sweep = gpu4d.sweep(str(path), ks=ks, backend="gpu", mask="auto")
        took = time.perf_counter() - start
        stages = ", ".join(f"{name} {sweep.timings[name]:.3f}" for name in ("sketch", "kmeans", "final_pass", "scores"))
        print(f"sweep k={ks[0]}..{ks[-1]}: {took:.2f} s (expected {SWEEP_EXPECTED_S:.1f}); {stages}; "
              f"suggests k={sweep.suggested_k}")
        worst = max(worst, took / SWEEP_EXPECTED_S)

    if not args.no_cpu:
        start = time.perf_counter()
        cpu = gpu4d.cluster(str(path), ks[0], backend="cpu", mask="auto")
        cpu_total = time.perf_counter() - start
        print(f"CPU backend, k={ks[0]}: {cpu_total:.2f} s ({cpu.backend_description})")
    verdict = "within" if worst <= 1.0 else f"{worst:.1f}x over"
    print(f"slowest stage against ROOFLINE.md: {verdict} its expectation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
