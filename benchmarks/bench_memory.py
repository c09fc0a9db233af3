"""Bounded memory, linear cost: ``gpu4d cluster`` and ``gpu4d sweep`` on a >= 10 GB scan.

    .venv/bin/python benchmarks/bench_memory.py            # 256x320 patterns of 256x256 uint16: 10.7 GB
    .venv/bin/python benchmarks/bench_memory.py --quick    # 64x128 patterns (1.07 GB): checks the script

Issue 12, item 4: peak anonymous memory <= 1.5 GB for ``cluster`` and ``sweep`` on any scan size
(memory-mapped input pages do not count), and the time per detector pixel on the big scan within
1.5x of the seed-sized scan's (181x172 patterns of 144x144 px).

**The scans.** Both are ``.npy`` uint16 files from the same generator, written under ``--dir``
(default ``/tmp/gpu4d-bigscan``) with their ground-truth labels beside them (``*-truth.npy``), and
reused when they exist with the right shape. The big one is written row by row through
``numpy.lib.format.open_memmap``: one scan row of patterns is in memory at a time, never the
scan. Every pattern holds a direct beam (a disc), a diffuse halo, a flat background and the
Bragg spots of its region: ``--regions`` Voronoi regions, each a 2-D lattice of its own spacing
and rotation. A thickness wedge across the scan moves electrons from the beam into the halo and
the spots (as ``gpu4d.synthetic`` does; its generator renders the whole scan into one array, so
it is not used here), and every pixel is a Poisson draw from its expected count (1.5 electrons
per pixel on average). The file is written to ``NAME.partial.npy`` and renamed when complete.

**The runs.** Each command runs as a user runs it, the ``gpu4d`` executable beside this Python,
in its own process: ``gpu4d cluster FILE -k K --out DIR`` and ``gpu4d sweep FILE -k 2:8 --out
DIR`` (``--no-figures`` unless ``--figures``: figures cost a fixed ~2-3 s per k, which is not
the per-pixel cost measured here). The seed-sized runs are repeated (``--repeat``, median
reported; the first also loads numba's compiled kernels), the big ones run once. Each scan is
read through once before its runs, so both are read from the page cache.

**Memory.** Every 0.05 s the script reads ``RssAnon`` (and ``RssFile``, for information) from
``/proc/PID/status`` of the gpu4d process and of all its descendants (``/proc/PID/task/*/
children``) and keeps the peak of their sum. ``RssAnon`` is the process's anonymous resident
memory (heap, numpy arrays, thread stacks); pages of the memory-mapped scan are file-backed and
count in ``RssFile`` only. A peak shorter than the polling interval can be missed. A run whose
anonymous memory passes ``--memory-limit-gb`` (default 8) is killed, to protect the machine, and
reported as such.

Prints one table (wall time, peak anonymous and file-backed memory, nanoseconds per detector
pixel = wall / (patterns * qy * qx), big / seed ratio, ARI against the ground truth at k = K,
sweep's suggested k) and the issue's targets with PASS / FAIL; exits 1 if any fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

BIG = "256x320x256x256"
SEED = "181x172x144x144"
QUICK_BIG = "64x128x256x256"
QUICK_SEED = "90x86x144x144"
#: Issue 12's targets.
MEMORY_TARGET_BYTES = 1.5 * 2**30
TIME_RATIO_TARGET = 1.5
POLL_S = 0.05
#: Mean electrons per detector pixel, and the shares of a pattern's electrons at the thin
#: (first column) and thick (last column) end of the scan: beam, halo, spots, flat background.
COUNTS_PER_PIXEL = 1.5
THIN_SHARES = (0.45, 0.25, 0.10, 0.20)
THICK_SHARES = (0.20, 0.40, 0.20, 0.20)
GPU4D = Path(sys.executable).with_name("gpu4d")


def main(argv=None) -> int:
    args = parse_args(argv)
    if not GPU4D.exists():
        raise SystemExit(f"bench_memory: no gpu4d executable beside {sys.executable}; install gpu4d there first")
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    scans = {
        "seed": ensure_scan(folder, args.seed_scan, args.regions, args.jobs, seed=1),
        "big": ensure_scan(folder, args.big, args.regions, args.jobs, seed=2),
    }
    # the gpu4d executable's import path (PYTHONPATH, then site-packages); not this folder's
    package = subprocess.run([sys.executable, "-c", "import gpu4d; print(gpu4d.__file__)"],
                             capture_output=True, text=True, cwd=folder).stdout.strip()
    print(f"CPU cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; {GPU4D} runs {package}", flush=True)

    rows = []
    for name, (path, truth_path) in scans.items():
        warm_page_cache(path)
        truth = np.load(truth_path)
        repeat = args.repeat if name == "seed" else 1
        for command in ("cluster", "sweep"):
            runs = [run_gpu4d(command, path, truth, folder / "results" / f"{name}-{command}", args)
                    for _ in range(repeat)]
            row = median_run(runs)
            row.update(scan=name, command=command, shape=np.load(path, mmap_mode="r").shape)
            if repeat > 1:
                row["each_s"] = [r["seconds"] for r in runs]
            rows.append(row)

    report = print_report(rows, args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 0 if all(report["checks"].values()) else 1


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/tmp/gpu4d-bigscan", help="where the scans and results go (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help=f"big scan {QUICK_BIG}, seed scan {QUICK_SEED}")
    parser.add_argument("--big", help=f"big scan NYxNXxQYxQX (default {BIG})")
    parser.add_argument("--seed-scan", help=f"baseline scan NYxNXxQYxQX (default {SEED})")
    parser.add_argument("--regions", type=int, default=5, help="regions in each scan; cluster runs with -k this (default 5)")
    parser.add_argument("--ks", default="2:8", help="sweep's -k (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command on the seed scan (median; default 3)")
    parser.add_argument("--memory-limit-gb", type=float, default=8.0,
                        help="kill a run whose anonymous memory passes this (default %(default)s)")
    parser.add_argument("--figures", action="store_true", help="let gpu4d write its figures (default --no-figures)")
    parser.add_argument("--jobs", type=int, default=2, help="threads drawing the Poisson noise (default 2)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    args.big = parse_shape(args.big or (QUICK_BIG if args.quick else BIG), "--big")
    args.seed_scan = parse_shape(args.seed_scan or (QUICK_SEED if args.quick else SEED), "--seed-scan")
    if not 2 <= args.regions <= 12:
        parser.error(f"--regions={args.regions} should be between 2 and 12")
    return args


def parse_shape(text: str, name: str) -> tuple[int, int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts) or min(map(int, parts[2:])) < 32:
        raise SystemExit(f"bench_memory: {name}={text!r} should be NYxNXxQYxQX, positive, detector >= 32 px")
    return tuple(int(p) for p in parts)


# --------------------------------------------------------------------------------- the scans


def ensure_scan(folder: Path, shape, n_regions: int, jobs: int, seed: int) -> tuple[Path, Path]:
    """The scan file and its truth labels: reused when present with the right shape, else written."""
    ny, nx, qy, qx = shape
    path = folder / f"scan-{ny}x{nx}-{qy}x{qx}-r{n_regions}-s{seed}-uint16.npy"
    truth_path = path.with_name(path.stem + "-truth.npy")
    if path.exists() and truth_path.exists():
        existing = np.load(path, mmap_mode="r")
        if existing.shape == tuple(shape) and existing.dtype == np.uint16 and np.load(truth_path).shape == (ny, nx):
            print(f"scan {path} exists ({existing.nbytes / 1e9:.2f} GB), reused", flush=True)
            return path, truth_path
    nbytes = math.prod(shape) * 2
    free = shutil.disk_usage(folder).free
    if free < nbytes + 2**30:
        raise SystemExit(f"bench_memory: {folder} has {free / 1e9:.1f} GB free; the scan needs {nbytes / 1e9:.1f} GB")
    print(f"writing {path} ({nbytes / 1e9:.2f} GB) ...", flush=True)
    start = time.perf_counter()
    write_scan(path, truth_path, shape, n_regions, jobs, seed)
    print(f"  written in {time.perf_counter() - start:.0f} s", flush=True)
    return path, truth_path


def write_scan(path: Path, truth_path: Path, shape, n_regions: int, jobs: int, seed: int) -> None:
    """Write the scan row by row through a memory map; then its labels; then rename it into place."""
    ny, nx, qy, qx = shape
    rng = np.random.default_rng(seed)
    labels = voronoi_labels(ny, nx, n_regions, rng)
    beam, halo, flat, spots = pattern_parts(qy, qx, n_regions, rng)
    dose = COUNTS_PER_PIXEL * qy * qx
    wedge = np.linspace(0.0, 1.0, nx)[:, None]  # thickness across the scan, per column
    shares = dose * ((1 - wedge) * np.array(THIN_SHARES) + wedge * np.array(THICK_SHARES))  # (nx, 4)

    def render_row(y: int) -> np.ndarray:
        """Scan row y: (nx, qy, qx) uint16 Poisson counts."""
        lam = spots[labels[y]]  # (nx, qy, qx) float64, a copy
        lam *= shares[:, 2, None, None]
        for part, share in ((beam, shares[:, 0]), (halo, shares[:, 1]), (flat, shares[:, 3])):
            lam += share[:, None, None] * part
        # one generator per row: the file does not depend on the number of threads
        counts = np.random.default_rng((seed, y)).poisson(lam)
        return np.minimum(counts, np.iinfo(np.uint16).max).astype(np.uint16)

    partial = path.with_name(path.stem + ".partial.npy")
    scan = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint16, shape=tuple(shape))
    fill_rows(scan, render_row, jobs)
    scan.flush()
    del scan  # unmapped before the rename
    np.save(truth_path, labels)
    os.replace(partial, path)


def fill_rows(scan: np.ndarray, render_row, jobs: int) -> None:
    """``scan[y] = render_row(y)`` for every row, ``jobs`` rows at a time (numpy's Poisson draws
    release the GIL); only the rows in flight are in memory."""
    ny = scan.shape[0]
    start = time.perf_counter()

    def write_row(y: int) -> None:
        scan[y] = render_row(y)

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for done, _ in enumerate(pool.map(write_row, range(ny)), start=1):
            if done % 32 == 0 or done == ny:
                print(f"  row {done}/{ny}, {time.perf_counter() - start:.0f} s", flush=True)


def voronoi_labels(ny: int, nx: int, n_regions: int, rng) -> np.ndarray:
    """(ny, nx) int32: each probe position takes the label of its nearest of n_regions seeds,
    placed at least 0.6 mean region diameters apart (the best of 200 tries otherwise)."""
    best, best_gap = None, -1.0
    for _ in range(200):
        seeds = rng.random((n_regions, 2)) * (ny, nx)
        gaps = np.linalg.norm(seeds[:, None] - seeds[None], axis=-1) + np.eye(n_regions) * 1e9
        if gaps.min() > best_gap:
            best, best_gap = seeds, gaps.min()
        if best_gap >= 0.6 * math.sqrt(ny * nx / n_regions):
            break
    yy, xx = np.mgrid[0:ny, 0:nx]
    dist = (yy[..., None] - best[:, 0]) ** 2 + (xx[..., None] - best[:, 1]) ** 2
    labels = np.argmin(dist, axis=-1).astype(np.int32)
    # a region too small to cluster (a seed crowded out) would make the truth meaningless
    if np.bincount(labels.ravel(), minlength=n_regions).min() < 0.02 * ny * nx:
        raise SystemExit(f"bench_memory: a {ny}x{nx} scan is too small for {n_regions} regions")
    return labels


def pattern_parts(qy: int, qx: int, n_regions: int, rng):
    """The parts of a pattern, each (qy, qx) float64 summing to 1: beam disc, halo, flat, and
    the spots of every region (n_regions, qy, qx). Sizes are fractions of the detector."""
    size = min(qy, qx)
    yy, xx = np.mgrid[0:qy, 0:qx].astype(np.float64)
    cy, cx = (qy - 1) / 2, (qx - 1) / 2
    r = np.hypot(yy - cy, xx - cx)
    beam = np.clip(0.04 * size + 0.5 - r, 0, 1)  # an anti-aliased disc
    halo = np.exp(-(r**2) / (2 * (0.06 * size) ** 2))
    flat = np.ones((qy, qx))
    sigma = max(0.01 * size, 0.8)
    spots = np.zeros((n_regions, qy, qx))
    for i in range(n_regions):
        # lattices of distinct rotation (spread over 90 degrees) and spacing, so regions differ
        angle = math.pi / 2 * (i + rng.uniform(0.2, 0.8)) / n_regions
        a, b = size * rng.uniform(0.08, 0.13), size * rng.uniform(0.08, 0.13)
        gamma = rng.uniform(math.radians(65), math.radians(90))
        u = a * np.array([math.cos(angle), math.sin(angle)])
        v = b * np.array([math.cos(angle + gamma), math.sin(angle + gamma)])
        for h in range(-8, 9):
            for k in range(-8, 9):
                gy, gx = h * u + k * v
                g = math.hypot(gy, gx)
                if (h, k) == (0, 0) or g > 0.42 * size:
                    continue
                weight = math.exp(-((g / (0.25 * size)) ** 2)) * rng.uniform(0.3, 1.0)
                spots[i] += weight * np.exp(-((yy - cy - gy) ** 2 + (xx - cx - gx) ** 2) / (2 * sigma**2))
    parts = [beam, halo, flat, *spots]
    beam, halo, flat, *spots = (p / p.sum() for p in parts)
    return beam, halo, flat, np.stack(spots)


def warm_page_cache(path: Path) -> None:
    """Read the file once, so each run reads it from the page cache rather than the disk."""
    start = time.perf_counter()
    with open(path, "rb") as f:
        while f.read(1 << 26):
            pass
    print(f"read {path.name} once in {time.perf_counter() - start:.1f} s (page cache)", flush=True)


# ---------------------------------------------------------------------------------- the runs


def run_gpu4d(command: str, path: Path, truth: np.ndarray, out: Path, args) -> dict:
    """One ``gpu4d cluster`` or ``gpu4d sweep`` run: wall time, peak memory, ARI, gpu4d's stages."""
    from sklearn.metrics import adjusted_rand_score

    if out.exists():
        shutil.rmtree(out)  # ours, from an earlier run of this script
    out.parent.mkdir(parents=True, exist_ok=True)
    k = args.regions
    argv = [str(GPU4D), command, str(path), "-k", str(k) if command == "cluster" else args.ks, "--out", str(out)]
    if not args.figures:
        argv.append("--no-figures")
    log = out.with_name(out.name + ".log")
    print("running: " + " ".join(argv), flush=True)
    run = measured(argv, log, args.memory_limit_gb * 2**30)
    print(f"  {run['seconds']:.1f} s, peak anonymous {run['peak_anon'] / 2**20:.0f} MiB, "
          f"file-backed {run['peak_file'] / 2**20:.0f} MiB, exit {run['code']}", flush=True)
    run.update(ari=None, suggested_k=None, stages=None)
    if run["code"] != 0:
        print(f"  failed; the last lines of {log}:\n" + "".join(log.read_text(errors="replace").splitlines(True)[-15:]))
        return run
    if command == "cluster":
        labels = np.load(out / "labels.npy")
        run["stages"] = json.loads((out / "summary.json").read_text()).get("timings_s")
    else:
        labels = np.load(out / f"k{k:02d}" / "labels.npy")
        summary = json.loads((out / "sweep.json").read_text())
        run["suggested_k"] = summary.get("suggested_k")
        run["stages"] = summary.get("timings_s")
    run["ari"] = float(adjusted_rand_score(truth.ravel(), labels.ravel()))
    return run


def measured(argv: list[str], log: Path, limit_bytes: float) -> dict:
    """Run ``argv`` (output to ``log``), polling the anonymous and file-backed resident memory of
    its process tree every POLL_S; kill it if the anonymous memory passes ``limit_bytes``."""
    peak_anon = peak_file = 0
    killed = False
    with open(log, "wb") as out:
        start = time.perf_counter()
        # its own session: a run over the limit is killed with every process it started
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        while process.poll() is None:
            anon, file_backed = tree_memory(process.pid)
            peak_anon, peak_file = max(peak_anon, anon), max(peak_file, file_backed)
            if anon > limit_bytes and not killed:
                os.killpg(process.pid, signal.SIGKILL)
                killed = True
            time.sleep(POLL_S)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_anon": peak_anon, "peak_file": peak_file,
            "code": process.returncode, "killed": killed}


def tree_memory(pid: int) -> tuple[int, int]:
    """Sum of RssAnon and of RssFile (bytes) over ``pid`` and its descendants; 0 for any that
    has already exited."""
    anon = file_backed = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        anon += int(line.split()[1]) * 1024
                    elif line.startswith("RssFile:"):
                        file_backed += int(line.split()[1]) * 1024
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    pending.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):  # it exited between two reads
            continue
    return anon, file_backed


def median_run(runs: list[dict]) -> dict:
    """The run of median wall time (its memory and ARI go with it); the peak memory of all."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["peak_anon"] = max(r["peak_anon"] for r in runs)
    chosen["peak_file"] = max(r["peak_file"] for r in runs)
    chosen["code"] = max(runs, key=lambda r: abs(r["code"]))["code"]
    chosen["killed"] = any(r["killed"] for r in runs)
    return chosen


# -------------------------------------------------------------------------------- the report


def print_report(rows: list[dict], args) -> dict:
    for row in rows:
        row["ns_per_px"] = row["seconds"] / math.prod(row["shape"]) * 1e9
    per_px = {(r["scan"], r["command"]): r["ns_per_px"] for r in rows}
    print(f"\n{'scan':28s} {'command':8s} {'wall s':>8s} {'anon MiB':>9s} {'file MiB':>9s} "
          f"{'ns/px':>7s} {'big/seed':>9s} {'ARI':>6s} {'sugg. k':>8s}  exit")
    for r in rows:
        ny, nx, qy, qx = r["shape"]
        r["ratio"] = r["ns_per_px"] / per_px[("seed", r["command"])] if r["scan"] == "big" else None
        scan = f"{r['scan']} {ny}x{nx}x{qy}x{qx}"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        ari = "-" if r["ari"] is None else f"{r['ari']:.3f}"
        suggested = "-" if r["suggested_k"] is None else str(r["suggested_k"])
        killed = " (killed: over --memory-limit-gb)" if r["killed"] else ""
        print(f"{scan:28s} {r['command']:8s} {r['seconds']:8.1f} {r['peak_anon'] / 2**20:9.0f} "
              f"{r['peak_file'] / 2**20:9.0f} {r['ns_per_px']:7.2f} {ratio:>9s} {ari:>6s} {suggested:>8s}  "
              f"{r['code']}{killed}")
    for r in rows:
        if "each_s" in r:
            print(f"{r['scan']} {r['command']}: each run " + ", ".join(f"{s:.1f} s" for s in r["each_s"]) + " (median shown)")
        if r["scan"] == "big" and r["stages"]:
            print(f"big {r['command']}: gpu4d's stages " + ", ".join(f"{k} {v:.1f} s" for k, v in r["stages"].items()
                                                             if isinstance(v, (int, float))))
    # the wall time includes a fixed start-up (imports, kernels loaded from numba's cache) that
    # weighs more on the small scan: the same ratio over gpu4d's own stages, for information
    staged = {(r["scan"], r["command"]): sum(v for v in r["stages"].values() if isinstance(v, (int, float)))
              / math.prod(r["shape"]) * 1e9 for r in rows if r["stages"]}
    for command in ("cluster", "sweep"):
        if ("seed", command) in staged and ("big", command) in staged:
            seed_ns, big_ns = staged[("seed", command)], staged[("big", command)]
            print(f"{command}, gpu4d's stages only (start-up excluded): seed {seed_ns:.2f} ns/px, "
                  f"big {big_ns:.2f} ns/px, big/seed {big_ns / seed_ns:.2f}")
    print(f"(wall: start to exit of the gpu4d process, imports included; anon: peak RssAnon of its process tree, "
          f"polled every {POLL_S} s; file: peak RssFile, the memory-mapped scan among it, not counted; "
          f"ns/px: wall / (patterns * qy * qx); ARI at k = {args.regions} against the truth)")
    print(f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: other work on the machine skews the times")

    checks = {}
    for r in rows:
        checks[f"{r['scan']} {r['command']}: ran to completion"] = r["code"] == 0
        checks[f"{r['scan']} {r['command']}: peak anonymous memory <= 1.5 GiB"] = r["peak_anon"] <= MEMORY_TARGET_BYTES
    for r in rows:
        if r["ratio"] is not None:
            checks[f"big {r['command']}: time per pixel <= {TIME_RATIO_TARGET}x the seed scan's"] = (
                r["code"] == 0 and r["ratio"] <= TIME_RATIO_TARGET)
    print("\ntargets (issue 12, item 4):")
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    return {"rows": rows, "checks": checks}


if __name__ == "__main__":
    sys.exit(main())
