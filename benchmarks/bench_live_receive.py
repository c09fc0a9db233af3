"""Sustained frames/s that MerlinTCPSource receives from LiberTEM-live's Merlin simulator.

Writes a synthetic acquisition (``.mib`` + ``.hdr``, 12-bit counter depth, i.e. U16 frames)
to a temporary folder, serves it with ``libertem-live-mib-sim`` in a subprocess on
127.0.0.1, and receives it with :class:`gpu4d.live.MerlinTCPSource`. The simulator sends
the file once per connection; the first pass reads it from disk frame by frame, later
passes (``--cached MEM``) send it from memory in 16 MiB chunks, which shows what the
receiver alone sustains.

Usage::

    python benchmarks/bench_live_receive.py                 # 144x144 and 256x256
    python benchmarks/bench_live_receive.py --size 144 --frames 4000 --repeats 3

Needs ``pip install libertem-live``.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gpu4d.errors import InputError
from gpu4d.live import MerlinTCPSource
from gpu4d.io.mib_format import acquisition_header, encode_frames


def write_acquisition(folder: Path, size: int, n_frames: int, seed: int = 0) -> Path:
    """Write ``n_frames`` Poisson frames ``(size, size)`` U16 as .mib + .hdr; return the .hdr."""
    rng = np.random.default_rng(seed)
    mib = folder / f"bench_{size}.mib"
    with open(mib, "wb") as f:
        for start in range(0, n_frames, 256):
            b = min(256, n_frames - start)
            frames = rng.poisson(3.0, size=(b, size, size)).astype(np.uint16)
            f.write(encode_frames(frames, counter_depth=12, first_sequence=start + 1))
    hdr = mib.with_suffix(".hdr")
    hdr.write_bytes(acquisition_header(n_frames, counter_depth=12))
    return hdr


def free_ports(n: int) -> list[int]:
    """Ask the kernel for ``n`` free TCP ports on 127.0.0.1."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_simulator(hdr: Path, cached: str) -> tuple[subprocess.Popen, int]:
    """Start the simulator subprocess; return it and its data port."""
    data, control, trigger = free_ports(3)
    cmd = [
        sys.executable,
        "-m",
        "libertem_live.detectors.merlin.sim",
        str(hdr),
        "--host",
        "127.0.0.1",
        "--data-port",
        str(data),
        "--control-port",
        str(control),
        "--trigger-port",
        str(trigger),
        "--cached",
        cached,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, data


def stop_simulator(proc: subprocess.Popen) -> None:
    """Stop the simulator subprocess (killed if it does not stop within 10 s)."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def connect(port: int, deadline_s: float = 120.0) -> MerlinTCPSource:
    """Connect to the simulator, retrying while it starts up."""
    t_end = time.monotonic() + deadline_s
    while True:
        try:
            return MerlinTCPSource("127.0.0.1", port, timeout_s=30.0)
        except InputError:
            if time.monotonic() > t_end:
                raise
            time.sleep(0.2)


def receive_once(port: int, batch: int) -> tuple[int, float, float, float]:
    """Receive one acquisition.

    Returns
    -------
    frames : int
    wall_s : float
        Seconds from connecting to the last frame.
    steady_fps : float
        Frames/s after the first batch arrived (excludes connection and header latency).
    cpu_s : float
        CPU seconds the receiving process spent (user + system); unlike wall time, this
        barely depends on what else runs on the machine.
    """
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    n = first_len = 0
    t_first = t0
    with connect(port) as src:
        for b in src.batches(batch):
            if not first_len:
                t_first, first_len = time.perf_counter(), len(b.frames)
            n += len(b.frames)
    t1 = time.perf_counter()
    steady = (n - first_len) / (t1 - t_first) if n > first_len else float("nan")
    return n, t1 - t0, steady, time.process_time() - cpu0


def run(size: int, n_frames: int, repeats: int, batch: int, cached: str) -> None:
    """Serve one synthetic acquisition and receive it ``repeats + 1`` times."""
    with tempfile.TemporaryDirectory() as tmp:
        hdr = write_acquisition(Path(tmp), size, n_frames)
        mb = hdr.with_suffix(".mib").stat().st_size / 1e6
        proc, port = start_simulator(hdr, cached)
        try:
            for i in range(repeats + 1):
                n, wall, steady_fps, cpu = receive_once(port, batch)
                label = "pass 0 (sim reads file)" if i == 0 else f"pass {i} (cached={cached})"
                print(
                    f"{size}x{size} U16 {n} frames ({mb:.0f} MB) {label:23s} "
                    f"{n / wall:7.0f} frames/s ({mb / wall:4.0f} MB/s) incl. connect, "
                    f"{steady_fps:7.0f} after the first batch; "
                    f"receiver CPU {cpu:.2f} s = {n / cpu:7.0f} frames per CPU-second",
                    flush=True,
                )
        finally:
            stop_simulator(proc)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark for each ``--size`` and print one line per pass."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="*", default=[144, 256])
    parser.add_argument(
        "--frames",
        type=int,
        default=None,
        help="frames per acquisition (default 4000 for 144, 1500 for 256)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="cached passes after the first")
    parser.add_argument("--batch", type=int, default=256, help="max_frames per batch")
    parser.add_argument("--cached", default="MEM", choices=["NONE", "MEM"])
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    for size in args.size:
        n = args.frames or (4000 if size <= 144 else 1500)
        run(size, n, args.repeats, args.batch, args.cached)


if __name__ == "__main__":
    main()
