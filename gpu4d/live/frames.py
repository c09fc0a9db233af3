"""The frame store of a live run: every raw frame of the scan, kept as it arrives.

:class:`FrameStore` preallocates ``(n, qy, qx)`` at the first frames (memory-mapped when large)
and checks what arrives: frames in order, one shape, one dtype, finite values. The receiving
thread writes it (:meth:`FrameStore.receive`); the processing loop reads
``frames[:frames_received]``. ``default_batch`` is how many of them a step of the loop takes.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile

import numpy as np

from gpu4d.errors import InputError
from gpu4d.live._base import FrameBatch

__all__ = ["FrameStore", "check_scan_shape", "default_batch"]

#: Raw frames larger than this fraction of the physical memory go to a memory-mapped file.
IN_MEMORY_FRACTION = 0.4
#: Frames per step of a live loop (clustering and classifying): as many as fit in this much
#: float32 feature memory, within [MIN_BATCH, MAX_BATCH]. Large steps amortise the per-step
#: Python work.
BATCH_FEATURE_BYTES = 128 * 2**20
MIN_BATCH, MAX_BATCH = 256, 2048


def default_batch(n_features: int) -> int:
    """Frames per step of the loop for feature rows of ``n_features`` values."""
    return int(min(MAX_BATCH, max(MIN_BATCH, BATCH_FEATURE_BYTES // (4 * max(1, int(n_features))))))


class FrameStore:
    """Every raw frame of the scan, in acquisition order: (n, qy, qx) of the source's dtype.

    In memory, or in a ``.npy`` memory map in a temporary folder when the scan is larger than
    ``max_in_memory_bytes`` (default 40% of physical memory). Allocated at the first frames,
    when shape and dtype are known.

    Attributes
    ----------
    frames : (n, qy, qx) array or None
        Rows past ``received`` are not filled yet.
    received : int
        Frames stored so far (a prefix of the scan).
    detector_shape, dtype : known after the first frames.
    """

    def __init__(self, n_frames: int, spill_dir=None, max_in_memory_bytes: int | None = None):
        self.n_frames = int(n_frames)
        self.spill_dir = spill_dir
        self.max_in_memory_bytes = max_in_memory_bytes
        self.frames: np.ndarray | None = None
        self.folder: str | None = None
        self.received = 0
        self.detector_shape: tuple[int, int] | None = None
        self.dtype: np.dtype | None = None

    def receive(self, frames, start: int | None = None, *, check_first=None) -> int:
        """Store frames; return how many were kept (frames past the end of the scan are not).

        ``frames``: a frame (qy, qx), a batch (b, qy, qx) or a :class:`FrameBatch`.
        ``check_first(shape)`` is called with the detector shape of the very first frames,
        before anything is stored (it raises to refuse them).
        """
        if isinstance(frames, FrameBatch):
            start, frames = frames.start, frames.frames
        frames = np.asarray(frames)
        if frames.ndim == 2:
            frames = frames[None]
        if not frames.dtype.isnative:
            frames = frames.astype(frames.dtype.newbyteorder("="))
        if frames.dtype == np.float16:  # the kernels read no half precision
            frames = frames.astype(np.float32)
        if start is None:
            start = self.received
        if start != self.received:
            raise InputError(
                f"frames start at {start} but {self.received} frames came before; "
                "frames must arrive in order, none skipped or repeated."
            )
        if frames.ndim != 3 or frames.shape[0] == 0:
            raise InputError(f"frames should be (qy, qx) or (b, qy, qx), got shape {frames.shape}.")
        if self.frames is None:
            if frames.dtype.kind not in "uif" or frames.dtype.itemsize > 8:
                raise InputError(f"frames should be integer or float, got dtype {frames.dtype}.")
            shape = (int(frames.shape[1]), int(frames.shape[2]))
            if check_first is not None:
                check_first(shape)
            self._allocate(shape, frames.dtype)
        elif frames.shape[1:] != self.detector_shape:
            raise InputError(
                f"frame {start}: shape {frames.shape[1:]} differs from the first frame's "
                f"{self.detector_shape}."
            )
        elif frames.dtype != self.dtype:
            raise InputError(f"frame {start}: dtype {frames.dtype} differs from the first frame's {self.dtype}.")
        keep = min(len(frames), self.n_frames - start)
        if keep <= 0:
            return 0
        if frames.dtype.kind == "f":
            finite = np.isfinite(frames[:keep]).reshape(keep, -1).all(axis=1)
            if not finite.all():
                raise InputError(f"frame {start + int(np.argmin(finite))} contains NaN or Inf values.")
        self.frames[start : start + keep] = frames[:keep]
        self.received = start + keep  # after the copy: the reader sees whole frames
        return keep

    def _allocate(self, detector_shape: tuple[int, int], dtype: np.dtype) -> None:
        nbytes = self.n_frames * math.prod(detector_shape) * np.dtype(dtype).itemsize
        limit = self.max_in_memory_bytes
        if limit is None:
            limit = IN_MEMORY_FRACTION * _physical_memory()
        shape = (self.n_frames, *detector_shape)
        if nbytes <= limit:
            self.frames = np.empty(shape, dtype)
        else:
            self.folder = tempfile.mkdtemp(prefix="gpu4d-live-", dir=self.spill_dir)
            self.frames = np.lib.format.open_memmap(
                os.path.join(self.folder, "frames.npy"), mode="w+", dtype=dtype, shape=shape
            )
        self.detector_shape, self.dtype = detector_shape, np.dtype(dtype)

    @property
    def on_disk(self) -> bool:
        return self.folder is not None

    def close(self) -> None:
        """Free the frames (and delete the memory-mapped file)."""
        self.frames = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def check_scan_shape(scan_shape) -> tuple[int, int]:
    """``(ny, nx)`` as two ints >= 1, or an InputError naming ``scan_shape``."""
    try:
        ny, nx = (int(v) for v in scan_shape)
        exact = all(int(v) == v for v in scan_shape)
    except (TypeError, ValueError):
        raise InputError(f"scan_shape={scan_shape!r} should be (ny, nx), two integers >= 1.") from None
    if not exact or ny < 1 or nx < 1:
        raise InputError(f"scan_shape={scan_shape!r} should be (ny, nx), two integers >= 1.")
    return ny, nx


def _physical_memory() -> float:
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 8.0 * 2**30
