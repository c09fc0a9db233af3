"""What every live frame source shares: the batch type, the protocol and the stream errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from gpu4d.errors import Gpu4dError, InputError


@dataclass(frozen=True)
class FrameBatch:
    """Consecutive frames of an acquisition.

    Attributes
    ----------
    start : int
        Acquisition index of ``frames[0]`` (0 for the first frame).
    frames : numpy.ndarray
        ``(b, qy, qx)`` with b >= 1, native byte order (uint8/uint16/uint32 from a Merlin).
        The array belongs to the receiver: sources never write to it again.
    """

    start: int
    frames: np.ndarray

    def __post_init__(self) -> None:
        if self.start < 0:
            raise InputError(f"FrameBatch start={self.start} should be >= 0.")
        if self.frames.ndim != 3:
            raise InputError(
                f"FrameBatch frames should be (b, qy, qx), got shape {self.frames.shape}."
            )

    @property
    def stop(self) -> int:
        """Acquisition index one past the last frame."""
        return self.start + len(self.frames)


@runtime_checkable
class FrameSource(Protocol):
    """A source of frames in acquisition order, read in batches.

    Attributes
    ----------
    detector_shape : tuple of int or None
        ``(qy, qx)``; known after the first frame (or acquisition header) has arrived.
    """

    detector_shape: tuple[int, int] | None

    def batches(self, max_frames: int) -> Iterator[FrameBatch]:
        """Yield batches of at most ``max_frames`` frames until the acquisition ends."""
        ...

    def close(self) -> None:
        """Release sockets and files; safe to call more than once."""
        ...


class StreamIncomplete(Gpu4dError):
    """The stream ended before the acquisition did.

    Raised after every complete frame that arrived has been yielded, when a peer
    disconnects, a file stops growing, or a frame is cut off, before the expected number
    of frames (from the acquisition header or ``n_frames``).

    Attributes
    ----------
    frames_received : int
        Complete frames yielded before the stream ended.
    expected : int or None
        Frames the acquisition should have had; None when unknown.
    """

    def __init__(self, message: str, *, frames_received: int, expected: int | None) -> None:
        super().__init__(message)
        self.frames_received = frames_received
        self.expected = expected


class SourceBase:
    """Context-manager and bookkeeping shared by the concrete sources.

    Attributes
    ----------
    detector_shape : tuple of int or None
        ``(qy, qx)`` once known.
    frames_received : int
        Frames yielded so far.
    expected_frames : int or None
        Frames the acquisition will have, when known.
    """

    detector_shape: tuple[int, int] | None = None
    frames_received: int = 0
    expected_frames: int | None = None

    def batches(self, max_frames: int) -> Iterator[FrameBatch]:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[FrameBatch]:
        """Iterate batches of :attr:`default_batch_size` frames."""
        return self.batches(self.default_batch_size)

    default_batch_size: int = 256


def check_max_frames(max_frames: int) -> int:
    """Return ``max_frames`` as int, or raise InputError unless it is an integer >= 1."""
    if isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer)):
        raise InputError(f"max_frames={max_frames!r} should be an integer >= 1.")
    if max_frames < 1:
        raise InputError(f"max_frames={max_frames} should be >= 1.")
    return int(max_frames)


def check_n_frames(n_frames: int | None) -> int | None:
    """Return ``n_frames`` as int or None, or raise InputError unless it is >= 1."""
    if n_frames is None:
        return None
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise InputError(f"n_frames={n_frames!r} should be None or an integer >= 1.")
    return int(n_frames)
