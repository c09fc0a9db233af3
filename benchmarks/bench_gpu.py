"""GPU benchmark on the seed-sized scan (181x172 positions, 144x144 uint8 patterns).

Run on a machine with a CUDA GPU and ``pip install -e '.[gpu]'``:

    python benchmarks/bench_gpu.py            # k = 4..12
    python benchmarks/bench_gpu.py --k 6 --scan 90x86

Prints patterns/s per stage (read + transfer + preprocess, KMeans, mean-pattern pass) and the
end-to-end time of ``gpu4d.cluster`` for each k, next to the CPU backend's time for the first k
measured in the same run. Without a usable GPU it says why and exits 1: it never reports CPU or
simulator numbers as GPU numbers. Judge the numbers against ``benchmarks/ROOFLINE.md``.
"""

from __future__ import annotations

import argparse
import sys
import time


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", default="181x172", help="scan shape NYxNX (default 181x172)")
    parser.add_argument("--detector", type=int, default=144, help="detector side (default 144)")
    parser.add_argument("--k", default="4:12", help="k or a range K1:K2 (default 4:12)")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU reference run")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from gpu4d.backend import gpu_problem

    problem = gpu_problem()
    if problem is not None:
        print(f"bench_gpu: no usable GPU here ({problem}); nothing measured.", file=sys.stderr)
        return 1

    import gpu4d
    from gpu4d.synthetic import make_scan

    ny, nx = (int(v) for v in args.scan.lower().split("x"))
    first, _, last = args.k.partition(":")
    ks = list(range(int(first), int(last or first) + 1))
    print(f"generating a {ny}x{nx} scan of {args.detector}x{args.detector} uint8 patterns ...")
    scan = make_scan(
        scan_shape=(ny, nx), detector_shape=(args.detector, args.detector),
        n_grains=5, defect=True, dtype="uint8", seed=1,
    )
    n = ny * nx
    print(f"{n} patterns, {scan.data.nbytes / 1e6:.0f} MB raw")

    gpu4d.cluster(scan.data[:4], 2, backend="gpu")  # compile kernels, start CUDA, load cuML
    print(f"{'k':>3} {'total s':>8} {'preprocess pat/s':>17} {'kmeans pat/s':>13} {'means pat/s':>12} {'ARI':>6}")
    for k in ks:
        start = time.perf_counter()
        result = gpu4d.cluster(scan.data, k, backend="gpu", mask="auto")
        total = time.perf_counter() - start
        t = result.timings
        print(
            f"{k:3d} {total:8.3f} {n / t['preprocess']:17.0f} {n / t['kmeans']:13.0f} "
            f"{n / t['mean_patterns']:12.0f} {_ari(scan, result):6.3f}"
        )
    if not args.no_cpu:
        start = time.perf_counter()
        cpu = gpu4d.cluster(scan.data, ks[0], backend="cpu", mask="auto")
        cpu_total = time.perf_counter() - start
        print(f"CPU backend, k={ks[0]}: {cpu_total:.2f} s ({cpu.backend_description})")
    return 0


def _ari(scan, result) -> float:
    from sklearn.metrics import adjusted_rand_score

    return adjusted_rand_score(scan.labels.ravel(), result.labels.ravel())


if __name__ == "__main__":
    sys.exit(main())
