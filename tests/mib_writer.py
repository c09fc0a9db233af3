"""Write Quantum Detectors Merlin ``.mib`` records and ``.hdr`` headers for the tests.

The tests' own writer, kept apart from gpu4d's reader (``gpu4d.io.mib_format``), so that a round trip
checks the reader against an independent statement of the format: each frame is an ASCII
``MQ1`` header padded with NULs to its header size, then big-endian pixels with the rows in
reverse order (as Merlin sends them and RosettaSciIO flips them back).
"""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np


def frame_header(sequence: int, shape, *, pixel_depth: str = "U16", counter_depth: int = 12,
                 header_size: int = 384) -> bytes:
    """A single-chip ``MQ1`` frame header with an ``MQ1A`` extension, NUL-padded."""
    qy, qx = shape
    text = (
        f"MQ1,{sequence:06d},{header_size:05d},01,{qx:04d},{qy:04d},{pixel_depth},   1x1,01,"
        "2024-01-01 00:00:00.000000,0.001000,0,0,0,"
        + ",".join(["1.000000E+1"] * 8)
        + ",3RX,"
        + ",".join(["000"] * 27)
        + f",MQ1A,2024-01-01T00:00:00.000000000Z,1000000ns,{counter_depth},"
    ).encode("ascii")
    if len(text) > header_size:
        raise ValueError(f"frame header of {len(text)} bytes does not fit header_size={header_size}")
    return text.ljust(header_size, b"\x00")


def acquisition_header(n_frames: int, *, counter_depth: int = 12, scan_shape=None) -> bytes:
    """A minimal Merlin acquisition header (the text of a ``.hdr`` file)."""
    lines = [
        "HDR,\t",
        "Assembly Size (NX1, 2X2):\t   1x1",
        f"Counter Depth (number):\t{counter_depth}",
        f"Frames in Acquisition (Number):\t{n_frames}",
        f"Frames per Trigger (Number):\t{scan_shape[1] if scan_shape else 1}",
    ]
    if scan_shape:
        lines += [f"ScanX:\t{scan_shape[1]}", f"ScanY:\t{scan_shape[0]}"]
    lines.append("End\t")
    return "\r\n".join(lines).encode("latin-1")


def encode_frames(frames, *, counter_depth: int | None = None, first_sequence: int = 1) -> bytes:
    """``frames`` (b, qy, qx) uint8/16/32 as ``.mib`` records (U08/U16/U32), numbered from
    ``first_sequence``; reading them back gives ``frames``."""
    frames = np.asarray(frames)
    nbytes = frames.dtype.itemsize
    if frames.ndim != 3 or frames.dtype.kind != "u" or nbytes not in (1, 2, 4):
        raise ValueError(f"frames should be (b, qy, qx) uint8/16/32, got {frames.shape} {frames.dtype}")
    depth = counter_depth or {1: 6, 2: 12, 4: 24}[nbytes]
    headers = [
        frame_header(first_sequence + i, frames.shape[1:], pixel_depth=f"U{8 * nbytes:02d}",
                     counter_depth=depth)
        for i in range(frames.shape[0])
    ]
    pixels = frames[:, ::-1].astype(f">u{nbytes}").reshape(frames.shape[0], -1)
    return b"".join(h + p.tobytes() for h, p in zip(headers, pixels))


@contextlib.contextmanager
def growing_mib(path, frames, *, chunk: int = 64, pause_s: float = 0.02):
    """While the block runs, a thread writes ``frames`` to ``path`` as ``.mib`` records,
    ``chunk`` frames at a time with a pause between (a detector still acquiring); the block's
    end waits for the last frame."""

    def write():
        with open(path, "wb") as f:
            for start in range(0, len(frames), chunk):
                f.write(encode_frames(frames[start : start + chunk], first_sequence=start + 1))
                f.flush()
                time.sleep(pause_s)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        yield
    finally:
        writer.join()
