"""Sustained frames/s of live clustering on the CPU backend, from LiberTEM-live's Merlin simulator.

Writes a synthetic acquisition (``gpu4d.synthetic.make_scan`` patterns, 12-bit counter depth,
i.e. U16 frames, ``.mib`` + ``.hdr``) to a temporary folder, serves it with
``libertem-live-mib-sim --cached MEM`` on 127.0.0.1 (one receive-only pass first, so the
simulator serves every later pass from memory and is not the bottleneck), then runs
``gpu4d.live.LiveRun`` on ``merlin://127.0.0.1:PORT``: receiving thread, full preprocessing
(mask="auto", normalize="max"), mini-batch KMeans, re-seeding, snapshots every 5 s into a
results folder, then the Lloyd refinement over every frame and the final result files.

For each detector size it prints the processing rate (frames processed per second from the
first frame to the last one processed: the sustained rate, refinement excluded), whether every
frame arrived (no drops), the largest lag, the CPU time per frame, and the refinement time.

With ``--model DIR`` (a results folder of the same detector size) or ``--model fit`` (a model
clustered from a 24x24 synthetic scan of the same phases), every repeat also runs live
classification against that model (``LiveRun(model=...)``: no refitting) on the same frames,
from the same simulator, right after the live clustering, and prints both rates. ``--align
auto`` gives the live clustering the CLI's default alignment (LiveRun's default is none), so
both sides measure each frame's beam.

Usage::

    python benchmarks/bench_live.py                    # 144x144 and 256x256
    python benchmarks/bench_live.py --size 144 --scan 100x100 --repeats 2
    python benchmarks/bench_live.py --size 144 --scan 64x64 --model fit --align auto
    python benchmarks/bench_live.py --cli --size 144 --scan 100x100 --repeats 8

``--cli`` runs ``gpu4d live merlin://... --scan NYxNX -k K --out DIR`` in a subprocess as a user
does (defaults: alignment "auto", the progress bar on stderr, snapshots every 5 s, figures) and
reads ``rate_fps`` from its ``progress.json``: the rate the issue's target is stated in. It prints
every run and the median and range (the rate moves by 2x from run to run on 2 cores shared with
the simulator).

Needs ``pip install libertem-live``.

GPU expectation (on paper, from benchmarks/ROOFLINE.md; no GPU was available to measure it)
-------------------------------------------------------------------------------------------
Per 144x144 U16 frame the GPU path moves 41 kB over PCIe (~1 us at 25-50 GB/s), and its
preprocessing kernel and the two thin (n, m) x (m, k) matmuls of the mini-batch update read
~13 + 2 x 4 = 21 B per pixel from HBM, ~0.4 MB per frame, ~0.15 us at 3 TB/s. The device
could therefore sustain > 10^5-10^6 frames/s; live, the limit is the host: receiving and
decoding the TCP stream (~20,000 frames per CPU-second measured by bench_live_receive.py, one
core), i.e. a few 10^4 frames/s per receiving core, an order of magnitude above the
CPU backend's clustering rate. 256x256 frames are 3.2x larger: about 3x lower rates on both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_live_receive import connect, start_simulator, stop_simulator  # noqa: E402

from gpu4d.live import LiveRun  # noqa: E402
from gpu4d.io.mib_format import acquisition_header, encode_frames  # noqa: E402
from gpu4d.synthetic import make_scan  # noqa: E402


def write_acquisition(folder: Path, size: int, scan: tuple[int, int], seed: int = 3) -> Path:
    """A ``scan`` of (size, size) U16 frames tiled from a 32x32 synthetic scan; return the .hdr."""
    tile = make_scan(scan_shape=(32, 32), detector_shape=(size, size), seed=seed, dtype="uint16")
    ny, nx = scan
    rows = (np.arange(ny)[:, None] % 32) * 32 + (np.arange(nx)[None, :] % 32)  # tile index
    flat = tile.data.reshape(-1, size, size)
    mib = folder / f"live_{size}.mib"
    order = rows.ravel()
    with open(mib, "wb") as f:
        for start in range(0, len(order), 256):
            idx = order[start : start + 256]
            f.write(encode_frames(flat[idx], counter_depth=12, first_sequence=start + 1))
    hdr = mib.with_suffix(".hdr")
    hdr.write_bytes(acquisition_header(ny * nx, counter_depth=12, scan_shape=scan))
    return hdr


def warm_up(port: int) -> float:
    """Receive the acquisition once without processing, so the simulator caches it."""
    t = time.perf_counter()
    with connect(port) as src:
        for _ in src.batches(1024):
            pass
    return time.perf_counter() - t


def fit_model(folder: Path, size: int, k: int, seed: int = 3) -> Path:
    """A model of the acquisition's phases: ``gpu4d.cluster`` of a 24x24 scan of the same seed
    (the same orientations in another layout), saved to ``folder``."""
    import gpu4d

    scan = make_scan(scan_shape=(24, 24), detector_shape=(size, size), seed=seed, dtype="uint16")
    gpu4d.cluster(scan.data, k).save(folder, figures=False)
    return folder


def live_once(port: int, scan, k: int, out: Path, batch: int | None, model=None, align=None) -> dict:
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    options = {"model": model} if model else {"align": align}
    run = LiveRun(f"merlin://127.0.0.1:{port}", None if model else k, scan, out=out, overwrite=True,
                  display=False, snapshot_every_s=5.0, timeout_s=30.0, batch_size=batch, **options)
    outcome = run.run()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    p = outcome.progress
    return {
        "status": outcome.status,
        "frames": p["frames_received"],
        "expected": p["frames_expected"],
        "rate": p["rate_fps"],
        "max_lag": p["max_lag_frames_seen"],
        "finish_s": p["finish_s"],
        "wall_s": wall,
        "live_cpu_s": p["cpu_s"],
        "cpu_s": cpu,
        "live_s": wall - p["finish_s"],
        "snapshots": p["snapshots"],
        "reseeds": p["reseeds"],
        "timings": outcome.result.extra["live"]["timings_s"] if outcome.result is not None else {},
    }


def cli_once(port: int, scan, k: int, out: Path) -> dict:
    """``gpu4d live`` through the CLI, as a user runs it; its final progress.json."""
    command = [sys.executable, "-m", "gpu4d.cli", "live", f"merlin://127.0.0.1:{port}",
               "--scan", f"{scan[0]}x{scan[1]}", "-k", str(k), "--out", str(out), "--timeout", "30"]
    t0 = time.perf_counter()
    run = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(f"gpu4d live exited with {run.returncode}:\n{run.stderr[-2000:]}")
    progress = json.loads((out / "progress.json").read_text())
    progress["wall_s"] = wall
    return progress


def run_cli(size: int, scan, k: int, repeats: int) -> None:
    n = scan[0] * scan[1]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        hdr = write_acquisition(tmp, size, scan)
        proc, port = start_simulator(hdr, "MEM")
        try:
            w = warm_up(port)
            print(f"{size}x{size} U16, {n} frames, through the CLI: simulator warm-up pass {n / w:.0f} frames/s",
                  flush=True)
            rates = []
            for i in range(repeats):
                p = cli_once(port, scan, k, tmp / f"cli{i}")
                rates.append(p["rate_fps"])
                print(f"  run {i}: {p['status']}, {p['frames_processed']}/{p['frames_expected']} frames, "
                      f"rate_fps {p['rate_fps']:7.0f}, largest lag {p['max_lag_frames_seen']} frames, "
                      f"{1e6 * p['cpu_s'] / n:.0f} CPU-us/frame, {p['reseeds']} re-seeds, wall {p['wall_s']:.1f} s",
                      flush=True)
            print(f"  rate_fps median {statistics.median(rates):.0f} (range {min(rates):.0f}-{max(rates):.0f}) "
                  f"over {repeats} runs; target >= 5,000", flush=True)
        finally:
            stop_simulator(proc)


def run(size: int, scan, k: int, repeats: int, batch: int | None, model: str | None = None,
        align: str | None = None) -> None:
    n = scan[0] * scan[1]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        hdr = write_acquisition(tmp, size, scan)
        if model == "fit":
            model = fit_model(tmp / f"model_{size}", size, k)
        mb = hdr.with_suffix(".mib").stat().st_size / 1e6
        proc, port = start_simulator(hdr, "MEM")
        try:
            w = warm_up(port)
            print(f"{size}x{size} U16, {n} frames ({mb:.0f} MB): simulator warm-up pass {n / w:.0f} frames/s",
                  flush=True)
            for i in range(repeats):
                r = live_once(port, scan, k, tmp / f"out{i}", batch, align=align)
                missing = r["expected"] - r["frames"]
                drops = "no drops" if missing == 0 else f"{missing} MISSING"
                per_frame = r["live_cpu_s"] / n
                print(
                    f"  run {i}: {r['status']}, {r['frames']}/{r['expected']} frames ({drops}), "
                    f"sustained {r['rate']:7.0f} frames/s, largest lag {r['max_lag']} frames, "
                    f"{r['snapshots']} snapshots, {r['reseeds']} re-seeds",
                    flush=True,
                )
                print(
                    f"         live stage: {1e6 * per_frame:.0f} CPU-us/frame in this process "
                    f"(receiver + clustering) = {1 / per_frame:.0f} frames per CPU-second, "
                    f"{2 / per_frame:.0f} frames/s on 2 otherwise idle cores if spread evenly; "
                    f"then refinement + saving {r['finish_s']:.1f} s",
                    flush=True,
                )
                print(f"         stage seconds {r['timings']}", flush=True)
                if model is not None:
                    c = live_once(port, scan, k, tmp / f"classified{i}", batch, model=model)
                    missing = c["expected"] - c["frames"]
                    print(
                        f"  run {i} with the model: {c['status']}, {c['frames']}/{c['expected']} frames "
                        f"({'no drops' if missing == 0 else f'{missing} MISSING'}), sustained {c['rate']:7.0f} "
                        f"frames/s ({c['rate'] / max(r['rate'], 1e-9):.2f}x live clustering), largest lag "
                        f"{c['max_lag']} frames, {1e6 * c['live_cpu_s'] / n:.0f} CPU-us/frame, saving "
                        f"{c['finish_s']:.1f} s",
                        flush=True,
                    )
                    print(f"         stage seconds {c['timings']}", flush=True)
        finally:
            stop_simulator(proc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="*", default=[144, 256])
    parser.add_argument("--scan", default=None, help="NYxNX (default 128x128 for 144, 64x64 for 256)")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch", type=int, default=None, help="mini-batch size (default: automatic)")
    parser.add_argument("--align", default=None, metavar="METHOD",
                        help="live clustering's align (auto, com, ...; default: none, LiveRun's); "
                        "the classification aligns as its model says")
    parser.add_argument("--model", default=None, metavar="DIR|fit",
                        help="also classify the same frames live with this model (a results folder "
                        "of the same detector size; 'fit': clustered from a synthetic scan of the "
                        "same phases)")
    parser.add_argument("--cli", action="store_true",
                        help="run `gpu4d live` through the CLI with its defaults and report progress.json's rate_fps")
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    for size in args.size:
        if args.scan:
            scan = tuple(int(v) for v in args.scan.lower().split("x"))
        else:
            scan = (128, 128) if size <= 144 else (64, 64)
        if args.cli:
            run_cli(size, scan, args.k, args.repeats)
        else:
            run(size, scan, args.k, args.repeats, args.batch, args.model, args.align)
    print(GPU_EXPECTATION, flush=True)


GPU_EXPECTATION = """GPU backend (expected, not measured; see the docstring and ROOFLINE.md): the device needs
~1 us per 144x144 frame (41 kB over PCIe, ~0.4 MB of HBM traffic for the preprocessing kernel and
the two thin matmuls of the update), so the rate is set by the host receiving and decoding the
stream: ~20,000 frames per CPU-second per receiving core (bench_live_receive.py), i.e. 10^4+
frames/s for 144x144 and ~3x fewer for 256x256, with the clustering off the host's CPUs."""


if __name__ == "__main__":
    main()
