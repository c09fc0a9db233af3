"""A NanoMegas blockfile (.blo): its header's shape and calibrations, and its patterns read in
batches of scan rows with file reads.

The layout is RosettaSciIO's (``rsciio.blockfile``): a header, then from ``offset_2`` one frame
per scan position, a 6-byte frame header then dp x dp uint8 pixels. gpu4d reads it itself
because RosettaSciIO serves the pixels through dask, which copied every batch into fresh memory
(~2 s of a ~15 s sweep of the seed-sized scan; a read into a new buffer costs a quarter of
that), and its lazy load imports dask and HyperSpy (~1 s of a ~6 s ``cluster``) for the four
calibration numbers the header holds. ``tests/test_dataset.py`` checks the shape and every
axis against HyperSpy's load of the same files. Reads, unlike a memory map, do not add the
file's pages to the process's resident memory.
"""

from __future__ import annotations

import os

import numpy as np

#: The start of a NanoMegas blockfile header, as ``rsciio.blockfile`` reads it: scan steps
#: ``sx``, ``sy`` in nm, ``sdp`` the detector's pixels per cm times 100.
BLOCKFILE_HEADER = np.dtype(
    [("id", "S6"), ("magic", "<u2"), ("offset_1", "<u4"), ("offset_2", "<u4"), ("flags", "<u4"),
     ("dp_size", "<u2"), ("dp_rotation", "<u2"), ("nx", "<u2"), ("ny", "<u2"),
     ("scan_rotation", "<u2"), ("sx", "<f8"), ("sy", "<f8"), ("beam_energy", "<u4"), ("sdp", "<u2")]
)
FRAME_HEADER_BYTES = 6


class BlockfileFrames:
    """Array-like (ny, nx, dp, dp) uint8 view of a .blo: ``frames[a:b]`` reads scan rows a..b-1."""

    ndim = 4
    dtype = np.dtype(np.uint8)

    def __init__(self, path, ny: int, nx: int, dp: int, offset: int):
        self.path = str(path)
        self.shape = (ny, nx, dp, dp)
        self._offset = offset
        self._frame_bytes = FRAME_HEADER_BYTES + dp * dp

    def __getitem__(self, rows):
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("a blockfile is read by slices of scan rows, e.g. frames[3:7]")
        ny, nx, dp, _ = self.shape
        first, last, _ = rows.indices(ny)
        last = max(first, last)
        frames = np.empty(((last - first) * nx, dp, dp), np.uint8)
        with open(self.path, "rb") as f:
            got = _read_frames(f, self._offset + first * nx * self._frame_bytes, frames)
        if got != frames.shape[0] * self._frame_bytes:
            raise EOFError(
                f"{self.path}: read {got} of {frames.shape[0] * self._frame_bytes} bytes of scan "
                f"rows {first}..{last - 1}; is the file truncated?"
            )
        return frames.reshape(last - first, nx, dp, dp)

    def __len__(self) -> int:
        return self.shape[0]


def read_header(path) -> dict:
    """``nx``, ``ny``, ``dp``, ``offset`` (of the first frame) and the calibrations from a .blo
    header: ``scan_step`` (sy, sx) in nm and ``detector_step`` in cm (RosettaSciIO's units and
    values: 100 / sdp, 1 where sdp is 0); empty when the file is too short or lacks the
    blockfile signature."""
    header = np.fromfile(path, BLOCKFILE_HEADER, count=1)
    if len(header) == 0 or int(header["magic"][0]) != 0x0102:
        return {}
    sdp = int(header["sdp"][0])
    return {
        "nx": int(header["nx"][0]),
        "ny": int(header["ny"][0]),
        "dp": int(header["dp_size"][0]),
        "offset": int(header["offset_2"][0]),
        "scan_step": (float(header["sy"][0]), float(header["sx"][0])),
        "detector_step": 100.0 / sdp if sdp else 1.0,
    }


#: Frames per vectored read: two buffers (header, pixels) each, within Linux's IOV_MAX of 1024.
FRAMES_PER_READ = 512


def _read_frames(f, offset: int, frames: np.ndarray) -> int:
    """Read consecutive frames from ``offset`` into the C-contiguous ``frames`` (n, dp, dp),
    their headers skipped; the number of bytes read.

    One vectored read (``os.preadv``) per ``FRAMES_PER_READ`` frames scatters each frame's
    header into a scratch buffer and its pixels into place, so the batch is contiguous without
    a copy (a strided view of headers and pixels gave the kernel a second compiled signature).
    """
    pixel_bytes = frames[0].size if frames.shape[0] else 0
    pixels = memoryview(frames).cast("B")
    header = bytearray(FRAME_HEADER_BYTES)
    frame_bytes = FRAME_HEADER_BYTES + pixel_bytes
    if not hasattr(os, "preadv"):  # not on every platform: read, then copy out the pixels
        buffer = np.empty((frames.shape[0], frame_bytes), np.uint8)
        f.seek(offset)
        got = f.readinto(memoryview(buffer).cast("B"))
        frames.reshape(frames.shape[0], -1)[...] = buffer[:, FRAME_HEADER_BYTES:]
        return got
    got = 0
    fd = f.fileno()
    for start in range(0, frames.shape[0], FRAMES_PER_READ):
        stop = min(start + FRAMES_PER_READ, frames.shape[0])
        buffers = []
        for i in range(start, stop):
            buffers += (header, pixels[i * pixel_bytes : (i + 1) * pixel_bytes])
        want = (stop - start) * frame_bytes
        done = os.preadv(fd, buffers, offset + start * frame_bytes)
        got += done
        if done != want:  # a short read: end of file (regular files are otherwise read whole)
            break
    return got
