"""Batching of fixed-size Merlin frame records from a byte stream (a socket or a growing file).

Every frame of an acquisition has the same record size, so after the first frame the stream is
read straight into one reusable buffer of whole records, and each batch is checked and decoded
with a handful of numpy operations over a ``(b, record bytes)`` view of that buffer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from gpu4d.errors import InputError
from gpu4d.live._base import FrameBatch, SourceBase, StreamIncomplete, check_max_frames
from gpu4d.io.mib_format import AcquisitionHeader, FrameFormat, check_records, decode_pixels

#: Upper bound of the receive buffer; batches hold fewer frames than asked when it binds.
BUFFER_BYTES = 64 << 20


class StreamEnded(Exception):
    """Internal signal from a transport: no more data will come (the reason is the message)."""


class RecordSource(SourceBase):
    """Shared machinery of :class:`MerlinTCPSource` and :class:`GrowingMibSource`.

    Subclasses implement :meth:`_read_into`, :meth:`_open_acquisition` and
    :meth:`_close_transport`, and set ``_prefix_size``, ``_idle_timeout_s``, ``_poll_s`` and
    ``_latency_s``.

    Attributes
    ----------
    acquisition_header : AcquisitionHeader or None
        The acquisition header, when the stream (or a ``.hdr`` file) gave one.
    frame_format : FrameFormat or None
        Format of the frames, known after the first frame.
    """

    _prefix_size = 0
    _idle_timeout_s = 10.0
    _poll_s = 0.05
    _latency_s = 0.05
    _name = "stream"

    def __init__(self, n_frames: int | None) -> None:
        self._n_frames = n_frames
        self.expected_frames = n_frames
        self.acquisition_header: AcquisitionHeader | None = None
        self.frame_format: FrameFormat | None = None
        self.frames_received = 0
        self._reference: np.ndarray | None = None
        self._first_sequence = 0
        self._buffer = np.empty(0, dtype=np.uint8)
        self._filled = 0
        self._done = False
        self._closed = False
        # What ended the stream, kept so a batches() call after an abandoned generator
        # reports it instead of reading on past it.
        self._failure: Exception | None = None
        self._end_reason: str | None = None

    # -- hooks ------------------------------------------------------------------------------

    def _read_into(self, view: memoryview, wait_s: float) -> int:
        """Read up to ``len(view)`` bytes, waiting at most about ``wait_s`` for some.

        Returns the number of bytes read, 0 when none arrived in time; raises
        :class:`StreamEnded` when none ever will.
        """
        raise NotImplementedError

    def _open_acquisition(self) -> bytes:
        """Read up to and including the first frame record and return that record.

        Sets :attr:`frame_format`, :attr:`acquisition_header` and :attr:`expected_frames`
        via :meth:`_set_first_frame`.
        """
        raise NotImplementedError

    def _close_transport(self) -> None:
        raise NotImplementedError

    def _check_prefixes(self, rows: np.ndarray) -> tuple[int, Exception | None, str | None]:
        """Check the message prefixes of a batch: (rows that are frames, error, end reason)."""
        return len(rows), None, None

    def _tail_is_next_acquisition(self, tail: np.ndarray) -> bool:
        """Whether the bytes of an unfinished record start the next acquisition instead."""
        return False

    # -- public -----------------------------------------------------------------------------

    @property
    def scan_shape(self) -> tuple[int, int] | None:
        """``(ny, nx)`` from the acquisition header's ScanY/ScanX, when it has them."""
        return self.acquisition_header.scan_shape if self.acquisition_header else None

    def close(self) -> None:
        """Close the socket or file; safe to call more than once."""
        if not self._closed:
            self._closed = True
            self._close_transport()

    def batches(self, max_frames: int) -> Iterator[FrameBatch]:
        """Yield the acquisition's frames in batches of at most ``max_frames``.

        A batch is yielded as soon as it is full, or when at least one complete frame is
        waiting and nothing more arrives within the source's latency, so frames reach the
        consumer while the acquisition runs.

        Parameters
        ----------
        max_frames : int
            Largest batch to yield (>= 1). A batch is also capped so the receive buffer
            stays under 64 MiB.

        Yields
        ------
        FrameBatch
            ``frames`` is a new ``(b, qy, qx)`` array in native byte order.

        Raises
        ------
        InputError
            A malformed message, header or frame; the message names the frame index.
            Frames before it have been yielded.
        StreamIncomplete
            The stream ended before the acquisition did; every complete frame that arrived
            has been yielded.
        """
        max_frames = check_max_frames(max_frames)
        if self._failure is not None:
            raise self._failure
        if self._end_reason is not None and not self._done:
            self._end(self._end_reason)
        if self._done:
            return
        if self._closed:
            raise InputError(f"{self._name}: the source is closed.")
        if self.frame_format is None:
            try:
                first = self._open_acquisition()
            except StreamEnded as end:
                self._end(str(end))
                return
            except InputError as exc:
                self.close()
                self._failure = self._named(exc)
                raise self._failure from None
            except Exception:
                self.close()
                raise
            self._reserve(len(first))
            self._buffer[: len(first)] = np.frombuffer(first, dtype=np.uint8)
            self._filled = len(first)
        yield from self._stream(max_frames)

    # -- machinery --------------------------------------------------------------------------

    def _set_first_frame(self, fmt: FrameFormat, sequence: int, header: bytes) -> None:
        """Record the first frame's format; fix the expected count (``n_frames`` wins)."""
        self.frame_format = fmt
        self.detector_shape = fmt.shape
        self._first_sequence = sequence
        self._reference = np.frombuffer(header[: fmt.header_size], dtype=np.uint8).copy()
        if self._n_frames is None and self.acquisition_header is not None:
            self.expected_frames = self.acquisition_header.frames_in_acquisition

    @property
    def _record_size(self) -> int:
        assert self.frame_format is not None
        return self._prefix_size + self.frame_format.record_size

    def _reserve(self, nbytes: int) -> None:
        """Grow the receive buffer to at least ``nbytes``, keeping what it holds."""
        if len(self._buffer) < nbytes:
            grown = np.empty(nbytes, dtype=np.uint8)
            grown[: self._filled] = self._buffer[: self._filled]
            self._buffer = grown

    def _stream(self, max_frames: int) -> Iterator[FrameBatch]:
        """The receive loop: fill the buffer with whole records, yield them as batches."""
        rec = self._record_size
        capacity = max(1, min(max_frames, BUFFER_BYTES // rec))
        self._reserve(capacity * rec)
        view = memoryview(self._buffer)
        while True:
            want = capacity
            if self.expected_frames is not None:
                want = min(want, self.expected_frames - self.frames_received)
            if want <= 0:
                self._done = True
                self.close()
                return
            self._end_reason = self._fill(view, want * rec, rec)
            complete = self._filled // rec
            if complete:
                rows = self._buffer[: complete * rec].reshape(complete, rec)
                n_good, self._failure, end_reason = self._check(rows)
                self._end_reason = end_reason or self._end_reason
                batch = self._decode(rows[:n_good]) if n_good else None
                # Settle all state before yielding: a consumer may abandon this generator
                # at the yield and call batches() again.
                self._keep_tail(complete * rec)
                if end_reason:
                    self._filled = 0  # the rest belongs to the next acquisition
                if self._failure is not None:
                    self.close()
                if batch is not None:
                    yield batch
            if self._failure is not None:
                raise self._failure
            if self._end_reason is not None:
                self._end(self._end_reason)
                return

    def _fill(self, view: memoryview, limit: int, rec: int) -> str | None:
        """Read into ``view[filled:limit]``; return why the stream ended, or None."""
        # Idle time counts from now, not from the last data: while the consumer worked on
        # the previous batch, nobody was waiting.
        last = time.monotonic()
        while self._filled < limit:
            complete = self._filled >= rec
            try:
                n = self._read_into(
                    view[self._filled : limit], self._latency_s if complete else self._poll_s
                )
            except StreamEnded as end:
                return str(end)
            now = time.monotonic()
            if n:
                self._filled += n
                last = now
            elif complete:
                return None  # nothing more right now: hand over what is complete
            elif now - last > self._idle_timeout_s:
                return f"no data arrived for {self._idle_timeout_s:g} s"
        return None

    def _check(self, rows: np.ndarray) -> tuple[int, Exception | None, str | None]:
        """Return (leading rows that are good frames, error, end reason) for a batch."""
        n_ok, error, end_reason = self._check_prefixes(rows)
        assert self.frame_format is not None and self._reference is not None
        n_good, header_error = check_records(
            rows[:n_ok],
            fmt=self.frame_format,
            reference=self._reference,
            first_sequence=self._first_sequence,
            first_index=self.frames_received,
            header_offset=self._prefix_size,
        )
        if header_error is not None:
            return n_good, self._named(header_error), None
        if isinstance(error, InputError):
            error = self._named(error)
        return n_good, error, end_reason

    def _named(self, error: InputError) -> InputError:
        """Return ``error`` with the source's name in front of its message."""
        text = str(error)
        return error if text.startswith(self._name) else InputError(f"{self._name}: {text}")

    def _decode(self, rows: np.ndarray) -> FrameBatch:
        """Decode good rows into a batch and advance the frame count."""
        fmt = self.frame_format
        assert fmt is not None
        start = self._prefix_size + fmt.header_size
        frames = decode_pixels(rows[:, start : start + fmt.data_size], fmt)
        batch = FrameBatch(start=self.frames_received, frames=frames)
        self.frames_received += len(frames)
        return batch

    def _keep_tail(self, consumed: int) -> None:
        """Move the bytes of a partial record after ``consumed`` to the buffer's front."""
        tail = self._filled - consumed
        if tail:
            self._buffer[:tail] = self._buffer[consumed : self._filled].copy()
        self._filled = tail

    def _end(self, reason: str) -> None:
        """Finish the stream: return normally at a clean end, raise StreamIncomplete otherwise."""
        self._done = True
        self.close()
        if self._filled and self._tail_is_next_acquisition(self._buffer[: self._filled]):
            self._filled = 0
            reason = "a new acquisition started"
        got, expected = self.frames_received, self.expected_frames
        if self._filled and self.frame_format is not None:
            message = (
                f"{self._name}: frame {got} was cut off after {self._filled} of "
                f"{self._record_size} bytes: {reason}"
            )
        elif got == 0:
            message = f"{self._name}: no frame arrived: {reason}"
        elif expected is not None and got < expected:
            message = f"{self._name}: {reason} after {got} of {expected} frames"
        else:
            return
        raise StreamIncomplete(message, frames_received=got, expected=expected)

    def _read_exact(self, nbytes: int, *, what: str, timeout_s: float | None = None) -> bytes:
        """Read exactly ``nbytes`` (before the first frame; the hot loop uses the buffer).

        Raises
        ------
        StreamEnded
            When the stream ends or stays idle for ``timeout_s`` (default: the idle timeout).
        """
        timeout_s = self._idle_timeout_s if timeout_s is None else timeout_s
        out = bytearray(nbytes)
        view = memoryview(out)
        got = 0
        last = time.monotonic()
        while got < nbytes:
            try:
                n = self._read_into(view[got:], self._poll_s)
            except StreamEnded as end:
                raise StreamEnded(f"{end} ({got} of {nbytes} bytes of {what})") from None
            now = time.monotonic()
            if n:
                got += n
                last = now
            elif now - last > timeout_s:
                raise StreamEnded(
                    f"no data arrived for {timeout_s:g} s ({got} of {nbytes} bytes of {what})"
                )
        return bytes(out)
