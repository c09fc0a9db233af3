"""The patterns of a NanoMegas blockfile (.blo), read in batches of scan rows with file reads.

RosettaSciIO reads the metadata and calibrations (``gpu4d.dataset``); this module only serves
the pixel data of the layout RosettaSciIO's reader describes: from ``offset_2``, one frame per
scan position, a 6-byte frame header then dp x dp uint8 pixels. RosettaSciIO serves them
through dask, which copied every batch into fresh memory (~2 s of a ~15 s sweep of the
seed-sized scan); a read into a new buffer costs a quarter of that. Reads, unlike a memory map,
do not add the file's pages to the process's resident memory.
"""

from __future__ import annotations

import numpy as np

#: The start of a NanoMegas blockfile header (see rsciio.blockfile).
BLOCKFILE_HEADER = np.dtype(
    [("id", "S6"), ("magic", "<u2"), ("offset_1", "<u4"), ("offset_2", "<u4"), ("flags", "<u4"),
     ("dp_size", "<u2"), ("dp_rotation", "<u2"), ("nx", "<u2"), ("ny", "<u2")]
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
        n_frames = (last - first) * nx
        buffer = np.empty((n_frames, self._frame_bytes), np.uint8)
        with open(self.path, "rb") as f:
            f.seek(self._offset + first * nx * self._frame_bytes)
            got = f.readinto(memoryview(buffer).cast("B"))
        if got != buffer.nbytes:
            raise EOFError(f"read {got} of {buffer.nbytes} bytes of scan rows {first}..{last - 1}")
        return buffer[:, FRAME_HEADER_BYTES:].reshape(last - first, nx, dp, dp)

    def __len__(self) -> int:
        return self.shape[0]


def read_header(path) -> dict:
    """``nx``, ``ny``, ``dp`` and ``offset`` (of the first frame) from a .blo header; empty
    when the file is too short or lacks the blockfile signature."""
    header = np.fromfile(path, BLOCKFILE_HEADER, count=1)
    if len(header) == 0 or int(header["magic"][0]) != 0x0102:
        return {}
    return {
        "nx": int(header["nx"][0]),
        "ny": int(header["ny"][0]),
        "dp": int(header["dp_size"][0]),
        "offset": int(header["offset_2"][0]),
    }
