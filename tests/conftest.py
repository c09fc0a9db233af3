"""Shared fixtures: the sample files in ../shared/data, small in-memory scans and a CLI runner."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from .helpers import SHARED_DATA, missing_data, sample_path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real sample files; skips (CI: fails) the test when it is not there."""
    if not SHARED_DATA.is_dir():
        missing_data(
            f"sample data folder {SHARED_DATA} is absent: it is expected beside the repository, "
            "in ../shared/data (or set GPU4D_TEST_DATA)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def blo_file() -> Path:
    """NanoMegas blockfile test1.blo: (3, 2, 144, 144) uint8, scan step 12.8 nm."""
    return sample_path("blockfile/test1.blo")


@pytest.fixture(scope="session")
def mib_file() -> Path:
    """Merlin 001_4x2_6bit.mib (+ .hdr): (2, 4, 256, 256) uint8."""
    return sample_path("quantumdetector/001_4x2_6bit.mib")


@pytest.fixture(scope="session")
def big_endian_mib_file() -> Path:
    """Merlin 12-bit file that rsciio returns as big-endian >u2: (2, 4, 128, 256)."""
    return sample_path("quantumdetector/002_merlin_test_roi_sig256x128_nav4x2_hot_pixel_52x_39y.mib")


@pytest.fixture(scope="session")
def sample_file():
    """``sample_file("blockfile/test2.blo")``: a path under shared/data; skips (CI: fails) the
    test when that file is absent, at the call, so a test needs only the files it asks for."""
    return sample_path


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def file_hash():
    """``file_hash(path)``: the sha256 of a file, to prove gpu4d did not modify it."""
    return sha256


@dataclass
class TwoPhaseScan:
    data: np.ndarray  # (ny, nx, q, q) float32
    truth: np.ndarray  # (ny, nx) int: phase of each scan position


def make_two_phase_scan(ny: int = 4, nx: int = 6, q: int = 24, seed: int = 0) -> TwoPhaseScan:
    """A tiny scan with a bright central beam and one diffraction spot whose position depends
    on the phase (two phases, in an irregular map), plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((q, q), dtype=np.float64)
    c = (q - 1) / 2

    def blob(cy, cx, amplitude, sigma):
        return amplitude * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))

    beam = blob(c, c, 200.0, 1.5)
    spots = [blob(c - q / 3, c, 40.0, 1.0), blob(c, c - q / 3, 40.0, 1.0)]
    truth = (np.add.outer(np.arange(ny), 2 * np.arange(nx)) % 3 == 0).astype(int)
    data = np.empty((ny, nx, q, q), np.float32)
    for y in range(ny):
        for x in range(nx):
            data[y, x] = beam + spots[truth[y, x]] + rng.uniform(0, 2.0, (q, q))
    return TwoPhaseScan(data, truth)


@pytest.fixture(scope="session")
def make_scan():
    """``make_scan(ny=4, nx=6, q=24, seed=0)``: a new two-phase scan (see ``two_phase``)."""
    return make_two_phase_scan


@pytest.fixture
def two_phase() -> TwoPhaseScan:
    """(4, 6, 24, 24) float32 scan of two phases, with its ground-truth label map."""
    return make_two_phase_scan()


@dataclass
class CliRun:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys):
    """``run_cli(*argv)``: run ``gpu4d.cli.main`` in-process; returns CliRun(code, out, err).

    argparse's own errors raise SystemExit; its code is returned like main's.
    """
    from gpu4d.cli import main

    def run(*argv) -> CliRun:
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return CliRun(code, out, err)

    return run


# -- a one-connection TCP peer on 127.0.0.1, for live-stream fault tests ------------------

class Peer(threading.Thread):
    """Serve one connection on 127.0.0.1: send ``parts`` (bytes; floats = pauses in s; a
    ``threading.Event`` = wait until the test sets it), then close, or with ``hold_s`` keep the
    connection open that long first."""

    def __init__(self, parts, hold_s=0.0):
        super().__init__(daemon=True)
        self.parts, self.hold_s = parts, hold_s
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.server.settimeout(10)
        self.port = self.server.getsockname()[1]
        self.done = threading.Event()

    def run(self):
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        with conn:
            try:
                for part in self.parts:
                    if isinstance(part, float):
                        time.sleep(part)
                    elif isinstance(part, threading.Event):
                        part.wait(60)  # bounded: a failing test must not hang the suite
                    else:
                        conn.sendall(part)
                self.done.wait(self.hold_s)
            except OSError:
                pass
        self.server.close()


@pytest.fixture
def peer():
    peers = []

    def serve(parts, hold_s=0.0):
        p = Peer(parts, hold_s)
        p.start()
        peers.append(p)
        return p.port

    yield serve
    for p in peers:
        p.done.set()
        p.join(5)
        p.server.close()


@pytest.fixture
def merlin_sim():
    """Start LiberTEM-live's Merlin simulator in-process on 127.0.0.1 (free ports)."""
    sim_mod = pytest.importorskip(
        "libertem_live.detectors.merlin.sim", reason="libertem-live not installed"
    )
    started = []

    def start(path, nav_shape=None):
        sim = sim_mod.CameraSim(
            path=str(path),
            nav_shape=nav_shape,
            host="127.0.0.1",
            data_port=0,
            control_port=0,
            trigger_port=0,
        )
        sim.start()
        started.append(sim)
        sim.wait_for_listen()
        return sim.server_t.port

    yield start
    for sim in started:
        try:
            sim.stop()
        except Exception:  # noqa: BLE001 - daemon threads die with the process anyway
            pass

