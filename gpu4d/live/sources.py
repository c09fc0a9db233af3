"""Frame sources for live clustering: a Merlin data port, a growing ``.mib`` file, an iterable.

Each source yields :class:`FrameBatch` es of consecutive frames in acquisition order through
``batches(max_frames)``; :func:`open_source` picks the source from a URL, a path or an object.

Examples
--------
>>> from gpu4d.live import open_source
>>> with open_source("merlin://127.0.0.1:6342") as src:  # doctest: +SKIP
...     for batch in src.batches(256):
...         print(batch.start, batch.frames.shape)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from gpu4d.errors import InputError
from gpu4d.live._base import (
    FrameBatch,
    FrameSource,
    SourceBase,
    StreamIncomplete,
    check_max_frames,
)
from gpu4d.live._merlin_tcp import MerlinTCPSource
from gpu4d.live._mib_file import GrowingMibSource

__all__ = [
    "FrameBatch",
    "FrameSource",
    "GrowingMibSource",
    "IterableSource",
    "MerlinTCPSource",
    "StreamIncomplete",
    "check_source",
    "open_source",
    "parse_source_url",
]

#: Data port of the Merlin software when a ``merlin://`` URL gives none.
MERLIN_DATA_PORT = 6342


class IterableSource(SourceBase):
    """Frames from any Python iterable.

    Items may be single frames ``(qy, qx)``, batches ``(b, qy, qx)`` or :class:`FrameBatch`
    (whose ``start`` must continue the sequence). Consecutive single frames are gathered
    into batches of up to ``max_frames``; larger batches are split. Items are passed on
    without copying where possible; non-native byte order is converted.

    Parameters
    ----------
    iterable : iterable
        The items, consumed once.

    Attributes
    ----------
    detector_shape : tuple of int or None
        ``(qy, qx)``, known after the first item.
    frames_received : int
        Frames yielded so far.

    Raises
    ------
    InputError
        (from :meth:`batches`) when an item is not 2-D or 3-D numeric data, changes shape or
        dtype, or a FrameBatch does not start where the previous frames ended.
    """

    def __init__(self, iterable: Iterable[Any]) -> None:
        try:
            self._iterator = iter(iterable)
        except TypeError:
            raise InputError(
                f"IterableSource needs an iterable of frames, got {type(iterable).__name__}."
            ) from None
        self.detector_shape: tuple[int, int] | None = None
        self.frames_received = 0
        self._dtype: np.dtype | None = None
        self._n_items = 0

    def close(self) -> None:
        """Close the underlying iterator if it is a generator."""
        close = getattr(self._iterator, "close", None)
        if callable(close):
            close()

    def batches(self, max_frames: int) -> Iterator[FrameBatch]:
        """Yield the iterable's frames in batches of at most ``max_frames``.

        Parameters
        ----------
        max_frames : int
            Largest batch (>= 1).

        Yields
        ------
        FrameBatch
        """
        max_frames = check_max_frames(max_frames)
        pending: list[np.ndarray] = []
        for item in self._iterator:
            frames, start, single = self._as_frames(item)
            if single:
                pending.append(frames[0])
                if len(pending) == max_frames:
                    yield self._emit(np.stack(pending))
                    pending.clear()
                continue
            if pending:
                yield self._emit(np.stack(pending))
                pending.clear()
            if start is not None and start != self.frames_received:
                raise InputError(
                    f"item {self._n_items - 1}: FrameBatch starts at frame {start}, but "
                    f"{self.frames_received} frames came before it; frames must not be "
                    "skipped or repeated."
                )
            for i in range(0, len(frames), max_frames):
                yield self._emit(frames[i : i + max_frames])
        if pending:
            yield self._emit(np.stack(pending))

    def _emit(self, frames: np.ndarray) -> FrameBatch:
        batch = FrameBatch(start=self.frames_received, frames=frames)
        self.frames_received += len(frames)
        return batch

    def _as_frames(self, item: Any) -> tuple[np.ndarray, int | None, bool]:
        """Return (frames as (b, qy, qx), FrameBatch start or None, item was one frame)."""
        index = self._n_items
        self._n_items += 1
        start = None
        if isinstance(item, FrameBatch):
            start, item = item.start, item.frames
        frames = np.asarray(item)
        if frames.ndim not in (2, 3) or frames.size == 0:
            raise InputError(
                f"item {index}: expected a frame (qy, qx) or a batch (b, qy, qx), got "
                f"shape {frames.shape}."
            )
        if frames.dtype.kind not in "uif":
            raise InputError(
                f"item {index}: frames should be integer or float, got dtype {frames.dtype}."
            )
        if not frames.dtype.isnative:
            frames = frames.astype(frames.dtype.newbyteorder("="))
        single = frames.ndim == 2
        frames = frames[None] if single else frames
        self._check_consistent(frames, index)
        return frames, start, single

    def _check_consistent(self, frames: np.ndarray, index: int) -> None:
        """Fix shape and dtype from the first item; reject items that differ."""
        shape = (int(frames.shape[1]), int(frames.shape[2]))
        if self.detector_shape is None:
            self.detector_shape, self._dtype = shape, frames.dtype
        elif shape != self.detector_shape:
            raise InputError(
                f"item {index}: frame shape {shape} differs from the first item's "
                f"{self.detector_shape}."
            )
        elif frames.dtype != self._dtype:
            raise InputError(
                f"item {index}: dtype {frames.dtype} differs from the first item's {self._dtype}."
            )


def open_source(spec: Any, **kwargs: Any) -> FrameSource:
    """Open the frame source that ``spec`` names.

    Parameters
    ----------
    spec : str, os.PathLike, FrameSource, numpy.ndarray or iterable
        ``"merlin://HOST[:PORT]"`` (port 6342 by default) for a Merlin data port; a path to
        a ``.mib`` (or its ``.hdr``) for a file being written; an array of frames
        ``(qy, qx)``, ``(b, qy, qx)`` or a scan ``(ny, nx, qy, qx)``; a source, returned
        as is; any other iterable of frames or batches.
    **kwargs
        Passed to :class:`MerlinTCPSource` or :class:`GrowingMibSource`
        (e.g. ``n_frames``, ``timeout_s``, ``idle_timeout_s``).

    Returns
    -------
    FrameSource

    Raises
    ------
    InputError
        If ``spec`` names none of these, or keyword arguments are given for a source that
        takes none.
    """
    if isinstance(spec, str) and "://" in spec:
        return _open_url(spec, kwargs)
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if path.suffix.lower() not in (".mib", ".hdr"):
            raise InputError(
                f"{spec!s}: a live source should be merlin://HOST:PORT, a .mib/.hdr path or "
                f"an iterable of frames; got suffix {path.suffix!r}."
            )
        return GrowingMibSource(path, **kwargs)
    if kwargs:
        raise InputError(
            f"keyword arguments {sorted(kwargs)} apply to Merlin and .mib sources only."
        )
    if isinstance(spec, FrameSource):
        return spec
    if isinstance(spec, np.ndarray):
        return IterableSource([_array_as_batch(spec)])
    if isinstance(spec, Iterable):
        return IterableSource(spec)
    raise InputError(
        f"cannot open a live source from {type(spec).__name__}; expected merlin://HOST:PORT, "
        "a .mib path, an array or an iterable of frames."
    )


def _open_url(url: str, kwargs: dict[str, Any]) -> FrameSource:
    """Open a ``merlin://`` or ``file://`` URL."""
    scheme, where = parse_source_url(url)
    if scheme == "file":
        return open_source(where, **kwargs)
    return MerlinTCPSource(*where, **kwargs)


def parse_source_url(url: str) -> tuple[str, Any]:
    """``("merlin", (host, port))`` or ``("file", path)`` from a source URL, without connecting
    or opening anything; InputError naming what is wrong with a malformed URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        if "port" in str(exc).lower():
            raise InputError(f"{url}: the port should be an integer in 1..65535.") from None
        raise InputError(f"{url}: not a valid URL ({exc}); expected merlin://HOST:PORT.") from None
    if parts.scheme == "file":
        if not parts.path:
            raise InputError(f"{url}: a file:// URL needs a path, e.g. file:///data/scan.mib.")
        return "file", parts.path
    if parts.scheme != "merlin":
        raise InputError(f"{url}: unknown scheme {parts.scheme!r}; expected merlin:// or file://.")
    if port == 0:
        raise InputError(f"{url}: the port should be an integer in 1..65535.")
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InputError(f"{url}: expected merlin://HOST or merlin://HOST:PORT.")
    return "merlin", (parts.hostname, port or MERLIN_DATA_PORT)


def check_source(spec: Any) -> None:
    """Check a live source named by text (URL or path) before anything is prepared for it:
    a malformed URL or a path that is not a ``.mib``/``.hdr`` raises InputError."""
    if isinstance(spec, str) and "://" in spec:
        scheme, where = parse_source_url(spec)
        if scheme == "file":
            check_source(where)
    elif isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if not str(spec).strip():
            raise InputError("live source: the path is empty.")
        if path.suffix.lower() not in (".mib", ".hdr"):
            raise InputError(
                f"{spec!s}: a live source should be merlin://HOST:PORT or a .mib/.hdr path; "
                f"got suffix {path.suffix!r}."
            )
        if path.is_dir():
            raise InputError(f"{spec!s}: is a folder, not a .mib file.")


def _array_as_batch(array: np.ndarray) -> np.ndarray:
    """View a frame, a stack or a 4-D scan as a stack ``(b, qy, qx)``."""
    if array.ndim == 2:
        return array[None]
    if array.ndim == 3:
        return array
    if array.ndim == 4:
        return array.reshape(-1, *array.shape[2:])
    raise InputError(
        "an array source should be (qy, qx), (b, qy, qx) or (ny, nx, qy, qx); "
        f"got shape {array.shape}."
    )
