"""Benchmark ``gpu4d sweep -k 2:12`` against the original method and HyperSpy's route.

One command::

    python benchmarks/bench_sweep.py                  # the seed-sized scan: 181x172, 144x144 uint8
    python benchmarks/bench_sweep.py --scan 90x86     # a quicker, smaller one

The synthetic scan (5 grains and a twin lamella: 6 regions) is generated once with
``gpu4d.synthetic.make_scan`` and written as a ``.blo`` with ``gpu4d.synthetic.write_blo`` into
a cache folder (``--cache``, default ``$XDG_CACHE_HOME/gpu4d-bench`` or ``~/.cache/gpu4d-bench``),
beside its ground-truth labels and the detector mask every method uses (gpu4d's ``auto`` mask
of the direct beam, saved as ``.npy``). Each method then runs in its own fresh Python process,
timed from start to exit (imports and file reading included), with its peak resident memory
taken from the operating system (``os.wait4``):

* ``gpu4d sweep FILE -k 2:12 --mask MASK.npy --out DIR`` (with ``--no-figures`` too, since the
  others write nothing);
* the original method: HyperSpy load, reshape to float32, mask, ``sklearn.preprocessing
  .normalize(norm="max")``, ``sklearn.cluster.KMeans`` (default parameters) for k = 4, 5, 6 on
  the full-dimensional matrix;
* optionally (``--reference-n-init N``) full-dimensional KMeans k = 6 with N inits on the
  original's matrix, a better reference for the ARI than one init;
* HyperSpy's route: ``decomposition()`` (its default SVD solver, which for ``--hs-components``
  components of a matrix this size is the randomized one; the same signal mask) then
  ``cluster_analysis("decomposition")`` with k-means for every k of the sweep (``--ks``).

The scan is read once before any timing, so every method reads it from the page cache. gpu4d
runs ``--repeat`` times (default 3) and the median is reported (the first run also loads the
compiled kernels). ``--ari-every-k`` adds, for every k of the sweep, the ARI against
full-dimensional KMeans (10 inits) and against full-dimensional Lloyd iterations started from
the sweep's exact centroids, with the three inertias (slow: a full fit per k).

It prints wall time, peak memory and the ratios, the adjusted Rand index at k = 6 between
gpu4d's labels and full-dimensional KMeans on the same preprocessed data (the original method's
labels), and the ARI of each against the ground truth; then the done-when checks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_GRAINS = 5  # plus the twin lamella: 6 regions
ORIGINAL_KS = (4, 5, 6)
ARI_K = 6


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return run_child(args)
    cache = Path(args.cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    if args.prepare_only:
        prepare(cache, args)
        return 0
    # generate in a child process: on Linux a child's peak RSS (wait4) starts from its parent's
    # at fork, so a parent that generated the scan would inflate every method's peak memory
    forwarded = sys.argv[1:] if argv is None else list(argv)
    subprocess.run([sys.executable, __file__, *forwarded, "--prepare-only"], check=True)
    data_path, truth_path, mask_path = prepare(cache, args)
    truth = np.load(truth_path)
    print(f"scan {data_path} ({args.scan[0]}x{args.scan[1]}, {args.detector[0]}x{args.detector[1]} uint8), "
          f"{truth.max() + 1} regions; CPU cores: {os.cpu_count()}; load average now "
          f"{os.getloadavg()[0]:.1f}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="gpu4d-bench-"))
    # every method then reads the scan from the page cache, as the slowest method's own
    # second read would: a first read from disk would time the disk
    with open(data_path, "rb") as f:
        while f.read(1 << 26):
            pass
    runs = {}
    sweep_out = work / "sweep"
    base = [sys.executable, "-m", "gpu4d.cli", "sweep", str(data_path), "-k", args.ks,
            "--mask", str(mask_path), "-q", "--backend", args.backend]
    # gpu4d runs are short next to the machine's drift: the median of --repeat runs (the first
    # one also loads the compiled kernels from numba's cache, or compiles them in a new checkout)
    repeats = [
        timed(base + ["--out", str(work / "sweep-nofig"), "--no-figures", "--overwrite"])
        for _ in range(max(1, args.repeat))
    ]
    runs["gpu4d sweep --no-figures"] = median_run(repeats)
    if args.figures:
        runs["gpu4d sweep (with figures)"] = timed(base + ["--out", str(sweep_out)])
    else:
        sweep_out = work / "sweep-nofig"
    me = [sys.executable, os.path.abspath(__file__), "--child"]
    if not args.skip_original:
        runs["original (k=4,5,6)"] = timed(
            me + ["original", str(data_path), "--mask-file", str(mask_path), "--labels-out", str(work / "original.npy")]
        )
    if args.reference_n_init:
        runs[f"full KMeans k={ARI_K} n_init={args.reference_n_init}"] = timed(
            me + ["reference", str(data_path), "--mask-file", str(mask_path),
                  "--labels-out", str(work / "reference.npy"), "--reference-n-init", str(args.reference_n_init)]
        )
    if not args.skip_hyperspy:
        runs[f"HyperSpy (k={args.ks})"] = timed(
            me + ["hyperspy", str(data_path), "--mask-file", str(mask_path), "--labels-out", str(work / "hyperspy.npy"),
                  "--hs-components", str(args.hs_components)]
        )

    if args.ari_every_k:
        runs["full-dimensional KMeans, every k"] = timed(
            me + ["everyk", str(data_path), "--mask-file", str(mask_path), "--sweep-dir", str(sweep_out),
                  "--labels-out", str(work / "everyk.json"), "--ks", args.ks]
        )

    print(f"\n{'method':30s} {'wall s':>8s} {'peak MB':>9s}  exit")
    for name, run in runs.items():
        print(f"{name:30s} {run['seconds']:8.1f} {run['peak_mb']:9.0f}  {run['code']}")
    if len(repeats) > 1:
        print("gpu4d sweep --no-figures, each run: " + ", ".join(f"{r['seconds']:.2f} s" for r in repeats)
              + " (the median is reported)")
    failed = [name for name, run in runs.items() if run["code"] != 0]
    for name in failed:
        print(f"\n{name} failed:\n{runs[name]['stderr'][-3000:]}")

    summary = json.loads((sweep_out / "sweep.json").read_text()) if (sweep_out / "sweep.json").exists() else None
    sweep_labels = np.load(sweep_out / f"k{ARI_K:02d}" / "labels.npy") if summary else None
    report = {"runs": {k: {kk: v for kk, v in r.items() if kk != "stderr"} for k, r in runs.items()}}
    sweep_run = runs["gpu4d sweep --no-figures"]
    print()
    for name in ("original (k=4,5,6)", f"HyperSpy (k={args.ks})"):
        if name in runs and runs[name]["code"] == 0:
            ratio = runs[name]["seconds"] / sweep_run["seconds"]
            print(f"time ratio {name} / gpu4d sweep 2:12 (no figures): {ratio:.1f}x")
            if "gpu4d sweep (with figures)" in runs:
                r2 = runs[name]["seconds"] / runs["gpu4d sweep (with figures)"]["seconds"]
                print(f"time ratio {name} / gpu4d sweep 2:12 (figures):    {r2:.1f}x")
            report[f"ratio {name}"] = ratio
    if summary:
        from sklearn.metrics import adjusted_rand_score

        print(f"gpu4d suggested k = {summary['suggested_k']} (truth {truth.max() + 1}); components "
              f"{summary['components']['n_components']} of {summary['components']['sketch_size']}; "
              f"stages {summary['timings_s']}")
        report["suggested_k"] = summary["suggested_k"]
        report["ari"] = {"gpu4d vs truth": adjusted_rand_score(truth.ravel(), sweep_labels.ravel())}
        for name in ("original", "reference", "hyperspy"):
            path = work / f"{name}.npy"
            if path.exists():
                labels = np.load(path)
                report["ari"][f"{name} vs truth"] = adjusted_rand_score(truth.ravel(), labels.ravel())
                if name in ("original", "reference"):
                    report["ari"][f"gpu4d vs full-dimensional KMeans ({name})"] = adjusted_rand_score(
                        labels.ravel(), sweep_labels.ravel()
                    )
        for name, value in report["ari"].items():
            print(f"ARI at k={ARI_K}: {name:50s} {value:.4f}")
        # the same objective in the same space: which fit is the better KMeans solution?
        inertia = {"gpu4d": summary["scores"]["inertia"][summary["ks"].index(ARI_K)]}
        for name in ("original", "reference"):
            path = work / f"{name}.inertia.json"
            if path.exists():
                inertia[name] = json.loads(path.read_text())[str(ARI_K)]
        print(f"KMeans inertia at k={ARI_K} (full preprocessed space): "
              + ", ".join(f"{name} {value:.6g}" for name, value in inertia.items()))
        report["inertia"] = inertia
    if (work / "everyk.json").exists():
        every = json.loads((work / "everyk.json").read_text())
        print(f"\nevery k against full-dimensional KMeans ({every['n_init']} inits, random_state 0) and "
              "against full-dimensional Lloyd started from the sweep's exact centroids:")
        print(f"{'k':>4s} {'ARI vs KMeans':>14s} {'ARI vs Lloyd':>13s} {'inertia sweep':>14s} "
              f"{'KMeans':>12s} {'Lloyd':>12s}")
        for k, row in every["per_k"].items():
            print(f"{k:>4s} {row['ari_kmeans']:14.3f} {row['ari_lloyd']:13.3f} {row['inertia_sweep']:14.6g} "
                  f"{row['inertia_kmeans']:12.6g} {row['inertia_lloyd']:12.6g}")
        report["every_k"] = every
    print("\nchecks (done-when):")
    checks = {}
    if "ratio original (k=4,5,6)" in report:
        checks["sweep <= 1/10 of the original's time"] = report["ratio original (k=4,5,6)"] >= 10
    if f"ratio HyperSpy (k={args.ks})" in report:
        checks["sweep >= 5x faster than HyperSpy's route"] = report[f"ratio HyperSpy (k={args.ks})"] >= 5
    checks["sweep peak memory <= 1.5 GB"] = sweep_run["peak_mb"] <= 1.5 * 1024
    if summary:
        for name in ("reference", "original"):
            key = f"gpu4d vs full-dimensional KMeans ({name})"
            if key in report["ari"]:
                checks[f"ARI at k={ARI_K} vs full-dimensional KMeans ({name}) >= 0.95"] = report["ari"][key] >= 0.95
                break
        checks["suggested_k == number of regions"] = summary["suggested_k"] == truth.max() + 1
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    report["checks"] = checks
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float))
    print(f"\noutputs in {work}")
    return 0 if all(checks.values()) and not failed else 1


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scan", type=_pair, default=(181, 172), help="NYxNX (default 181x172)")
    parser.add_argument("--detector", type=_pair, default=(144, 144), help="QYxQX (default 144x144)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic scan (default 1)")
    parser.add_argument("--ks", default="2:12", help="ks of the sweep (default 2:12)")
    parser.add_argument("--backend", default="cpu", choices=("cpu", "gpu", "auto"))
    parser.add_argument("--cache", default=_default_cache(), help="folder of the generated scans")
    parser.add_argument("--figures", action="store_true", help="also time the sweep writing its figures")
    parser.add_argument("--skip-original", action="store_true")
    parser.add_argument("--skip-hyperspy", action="store_true")
    parser.add_argument("--hs-components", type=int, default=32, help="HyperSpy decomposition size (32)")
    parser.add_argument(
        "--reference-n-init", type=int, default=0,
        help=f"also fit full-dimensional KMeans k={ARI_K} with this many inits for the ARI (default: "
        "only the original method's fit, scikit-learn's default of one init)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="gpu4d sweep runs, median reported (3)")
    parser.add_argument(
        "--ari-every-k", action="store_true",
        help="also compare every k with full-dimensional KMeans (--reference-n-init inits, default 10) "
        "and with Lloyd started from the sweep's centroids (slow: a full fit per k, about 45 min for 2:12 on 2 cores)",
    )
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    parser.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    # internal: one method in this process
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "FILE"))
    parser.add_argument("--mask-file")
    parser.add_argument("--labels-out")
    parser.add_argument("--sweep-dir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _pair(text: str) -> tuple[int, int]:
    a, b = text.lower().split("x")
    return int(a), int(b)


def _default_cache() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "gpu4d-bench")


def prepare(cache: Path, args) -> tuple[Path, Path, Path]:
    """The cached .blo, its truth labels and the detector mask; generated on first use."""
    (ny, nx), (qy, qx) = args.scan, args.detector
    stem = f"synthetic_{ny}x{nx}_{qy}x{qx}_g{N_GRAINS}_defect_seed{args.seed}"
    data_path = cache / f"{stem}.blo"
    truth_path = cache / f"{stem}.labels.npy"
    mask_path = cache / f"{stem}.mask.npy"
    if not (data_path.exists() and truth_path.exists()):
        from gpu4d.synthetic import make_scan, write_blo

        print(f"generating {data_path} (once) ...", flush=True)
        scan = make_scan(
            scan_shape=(ny, nx), detector_shape=(qy, qx), n_grains=N_GRAINS, defect=True,
            drift_px=0.0, dtype="uint8", seed=args.seed,
        )
        write_blo(data_path, scan.data, scan_step_nm=scan.scan_step_nm, detector_scale=scan.detector_scale)
        np.save(truth_path, scan.labels)
        del scan
    if not mask_path.exists():
        from gpu4d.io.dataset import open_dataset
        from gpu4d.masks import build_mask, parse_mask
        from gpu4d.preprocessing import mean_pattern

        dataset = open_dataset(data_path)
        mask = build_mask(parse_mask("auto"), dataset.detector_shape, mean_pattern(dataset))
        np.save(mask_path, mask.masked)
    return data_path, truth_path, mask_path


def timed(command: list[str]) -> dict:
    """Run ``command``; wall seconds, peak RSS (MB) of that process, exit code, stderr."""
    print("running:", " ".join(command), flush=True)
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {
        "seconds": seconds,
        "peak_mb": usage.ru_maxrss * scale / 2**20,
        "code": process.returncode,
        "stderr": stderr,
    }


# ----------------------------------------------------------------------- the compared methods
def run_child(args) -> int:
    method, path = args.child
    masked = np.load(args.mask_file)
    if method == "original":
        labels, inertia = original_method(path, masked)
    elif method == "reference":
        labels, inertia = reference_fit(path, masked, args.reference_n_init)
    elif method == "hyperspy":
        labels = hyperspy_route(path, masked, args.hs_components, args.ks)
    elif method == "everyk":
        every = every_k(path, masked, Path(args.sweep_dir), args.ks, args.reference_n_init or 10)
        Path(args.labels_out).write_text(json.dumps(every, indent=1))
        return 0
    else:
        raise SystemExit(f"unknown method {method}")
    np.save(args.labels_out, labels)
    if method in ("original", "reference"):
        Path(args.labels_out).with_suffix(".inertia.json").write_text(json.dumps(inertia))
    return 0


def _original_matrix(path: str, masked: np.ndarray):
    """The thesis' preprocessing: load, reshape to float32, mask the beam, max-normalize."""
    import hyperspy.api as hs
    from sklearn.preprocessing import normalize

    signal = hs.load(path)
    ny, nx, qy, qx = signal.data.shape
    data = signal.data.reshape(ny * nx, qy * qx).astype(np.float32)
    del signal
    data[:, masked.ravel()] = 0
    return normalize(data, norm="max"), (ny, nx)


def original_method(path: str, masked: np.ndarray):
    """The thesis' method: its preprocessing, then KMeans (default parameters) for each k."""
    from sklearn.cluster import KMeans

    data, scan_shape = _original_matrix(path, masked)
    labels, inertia = {}, {}
    for k in ORIGINAL_KS:
        model = KMeans(n_clusters=k, random_state=0).fit(data)
        labels[k], inertia[k] = model.labels_, float(model.inertia_)
    return labels[ARI_K].reshape(scan_shape), inertia


def reference_fit(path: str, masked: np.ndarray, n_init: int):
    """Full-dimensional KMeans k=ARI_K with ``n_init`` inits on the original's matrix."""
    from sklearn.cluster import KMeans

    data, scan_shape = _original_matrix(path, masked)
    model = KMeans(n_clusters=ARI_K, n_init=n_init, random_state=0).fit(data)
    return model.labels_.reshape(scan_shape), {ARI_K: float(model.inertia_)}


def every_k(path: str, masked: np.ndarray, sweep_dir: Path, ks: str, n_init: int) -> dict:
    """For each k of the sweep: its labels against full-dimensional KMeans on the original's
    matrix (``n_init`` inits), and against full-dimensional Lloyd iterations started from the
    sweep's exact centroids (is the sweep's clustering a full-dimensional KMeans solution?)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from gpu4d.sweep import parse_ks

    data, _ = _original_matrix(path, masked)
    per_k = {}
    for k in parse_ks(ks):
        folder = sweep_dir / f"k{k:02d}"
        labels = np.load(folder / "labels.npy").ravel()
        start = np.load(folder / "centroids.npy").reshape(k, -1).astype(np.float32)
        fitted = KMeans(k, n_init=n_init, random_state=0).fit(data)
        refined = KMeans(k, init=start, n_init=1).fit(data)
        sweep_inertia = json.loads((sweep_dir / "sweep.json").read_text())["per_k"][str(k)]["inertia"]
        per_k[str(k)] = {
            "ari_kmeans": adjusted_rand_score(fitted.labels_, labels),
            "ari_lloyd": adjusted_rand_score(refined.labels_, labels),
            "inertia_sweep": sweep_inertia,
            "inertia_kmeans": float(fitted.inertia_),
            "inertia_lloyd": float(refined.inertia_),
        }
        print(k, per_k[str(k)], flush=True)
    return {"n_init": n_init, "per_k": per_k}


def median_run(runs: list[dict]) -> dict:
    """The run of median wall time (its peak memory: the largest of all)."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["peak_mb"] = max(r["peak_mb"] for r in runs)
    chosen["code"] = max(r["code"] for r in runs)
    chosen["all_seconds"] = [r["seconds"] for r in runs]
    return chosen


def hyperspy_route(path: str, masked: np.ndarray, n_components: int, ks: str) -> np.ndarray:
    """HyperSpy's own tools: decomposition, then cluster_analysis on its components, every k."""
    import hyperspy.api as hs

    from gpu4d.sweep import parse_ks

    signal = hs.load(path)
    signal.change_dtype("float32")
    signal.decomposition(
        algorithm="SVD", output_dimension=n_components, signal_mask=masked, print_info=False,
    )
    labels = None
    for k in parse_ks(ks):
        signal.cluster_analysis(
            "decomposition", number_of_components=n_components, preprocessing="norm",
            algorithm="kmeans", n_clusters=k, random_state=0,
        )
        if k == ARI_K:
            membership = signal.learning_results.cluster_labels  # (k, n) bool
            labels = np.argmax(membership, axis=0)
    ny, nx = signal.data.shape[:2]
    return labels.reshape(ny, nx)


if __name__ == "__main__":
    sys.exit(main())
