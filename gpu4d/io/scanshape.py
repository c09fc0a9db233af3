"""The scan shape (ny, nx): parsed in one place for ``cluster``, ``sweep``, ``live`` and the API,
and given to data whose navigation is flat (a list of frames) or 1-D.

Some acquisitions record no scan shape: a Merlin ``.mib`` without its ``.hdr`` (or with a header
that lacks ``ScanX``/``ScanY``), a DECTRIS ARINA master file, a frame stack in a ``.npy``. The
user gives it with ``--scan NYxNX`` (API ``scan_shape=(ny, nx)``), and :class:`FlatScan` serves
the frames as (ny, nx, qy, qx) rows without copying the file.
"""

from __future__ import annotations

import numbers
import re

import numpy as np

from ..errors import InputError


def parse_scan_shape(value, *, name: str = "scan_shape") -> tuple[int, int] | None:
    """``(ny, nx)`` from ``"NYxNX"`` (also ``NY,NX``), a pair of integers, or None.

    ``name`` is the argument named in errors (``"--scan"`` for the CLI).
    """
    if value is None:
        return None
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*[x,*X×]\s*(\d+)\s*", value)
        if not match:
            raise InputError(f"{name} {value!r}: expected NYxNX (rows x columns), e.g. 64x64")
        ny, nx = int(match[1]), int(match[2])
    else:
        try:
            ny, nx = value
        except (TypeError, ValueError):
            raise InputError(f"{name}={value!r} should be (ny, nx), two integers >= 1") from None
        for v in (ny, nx):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise InputError(f"{name}={value!r} should be (ny, nx), two integers >= 1")
        ny, nx = int(ny), int(nx)
    if ny < 1 or nx < 1:
        raise InputError(f"{name} {value!r}: both sizes should be >= 1")
    return ny, nx


def scan_shape_for(n_frames: int, scan_shape, source: str):
    """Check that ``scan_shape`` covers exactly ``n_frames`` frames; return it."""
    ny, nx = scan_shape
    if ny * nx != n_frames:
        raise InputError(
            f"scan shape {ny}x{nx} (--scan, scan_shape=) needs {ny * nx} patterns but {source} "
            f"holds {n_frames}; give a shape whose product is {n_frames}"
        )
    return ny, nx


class FlatScan:
    """Array-like (ny, nx, qy, qx) view of frames (n, qy, qx): ``scan[a:b]`` reads scan rows.

    ``frames`` is anything sliced along its first axis into frames: a numpy array or memory
    map, a dask array, an h5py dataset, :class:`gpu4d.io.arina.ArinaFrames`.
    """

    ndim = 4

    def __init__(self, frames, scan_shape: tuple[int, int]):
        self.frames = frames
        ny, nx = scan_shape
        self.shape = (ny, nx, *(int(s) for s in frames.shape[1:]))
        self.dtype = np.dtype(frames.dtype)
        # reads of arrays in memory and memory maps cost a copy; dask and files cost more
        self.reads_cheaply = isinstance(frames, np.ndarray) or getattr(frames, "reads_cheaply", False)

    def __getitem__(self, rows):
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("a flat scan is read by slices of scan rows, e.g. scan[3:7]")
        ny, nx = self.shape[:2]
        first, last, _ = rows.indices(ny)
        last = max(first, last)
        frames = self.frames[first * nx : last * nx]
        return frames.reshape(last - first, nx, *self.shape[2:])

    def __len__(self) -> int:
        return self.shape[0]
