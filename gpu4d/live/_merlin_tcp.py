"""Frames from the TCP data port of a Quantum Detectors Merlin (or a simulator of it)."""

from __future__ import annotations

import select
import socket

import numpy as np

from gpu4d.errors import InputError
from gpu4d.live._base import check_n_frames
from gpu4d.io.mib_format import (
    MPX_PREFIX_SIZE,
    parse_acquisition_header,
    parse_frame_header,
    parse_mpx_prefix,
)
from gpu4d.live._records import RecordSource, StreamEnded

#: Largest message accepted; a bigger length field is taken for a corrupt stream.
MAX_MESSAGE_BYTES = 256 << 20
_RECEIVE_BUFFER_BYTES = 8 << 20


class MerlinTCPSource(RecordSource):
    """Receive one acquisition from a Merlin data port (default port 6342).

    The data port sends ``MPX,<length>,<payload>`` messages: the acquisition header
    (``HDR``), then one message per frame (``MQ1`` header + pixel data). The source connects
    at construction, so it can be created before the acquisition is started; the first call
    of :meth:`batches` waits for the acquisition header. It ends after the expected number of
    frames (``n_frames``, else the header's ``Frames in Acquisition``); when neither gives
    one (continuous mode), at a disconnect, at the next acquisition header, or when no data
    arrives for ``timeout_s``, provided no frame was cut off.

    Parameters
    ----------
    host : str
        Host of the Merlin data server.
    port : int
        Its data port.
    timeout_s : float
        Time allowed to connect, and longest pause in the data before the stream is taken
        to have ended.
    n_frames : int, optional
        Frames to receive; overrides the acquisition header. Reception stops after them.
    header_timeout_s : float, optional
        How long to wait for the acquisition to start; defaults to ``timeout_s``.
    latency_s : float
        Longest time a received frame waits for its batch to fill before it is yielded.

    Attributes
    ----------
    detector_shape : tuple of int or None
        ``(qy, qx)``, known after the first frame.
    expected_frames : int or None
        Frames the acquisition will have, when known.
    frames_received : int
        Frames yielded so far.
    acquisition_header : AcquisitionHeader or None
        The parsed ``HDR`` message.
    scan_shape : tuple of int or None
        ``(ny, nx)`` from the header's ScanY/ScanX, when present.

    Raises
    ------
    InputError
        If the port is invalid or nothing accepts a connection there.

    Examples
    --------
    >>> with MerlinTCPSource("127.0.0.1", 6342) as src:  # doctest: +SKIP
    ...     for batch in src.batches(256):
    ...         consume(batch.start, batch.frames)
    """

    _prefix_size = MPX_PREFIX_SIZE

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout_s: float = 10.0,
        n_frames: int | None = None,
        header_timeout_s: float | None = None,
        latency_s: float = 0.05,
    ) -> None:
        super().__init__(check_n_frames(n_frames))
        if not isinstance(port, int) or not 0 < port < 65536:
            raise InputError(f"port={port!r} should be an integer in 1..65535.")
        self.host, self.port = host, port
        self._name = f"merlin://{_format_host(host)}:{port}"
        self._idle_timeout_s = float(timeout_s)
        self._header_timeout_s = float(timeout_s if header_timeout_s is None else header_timeout_s)
        self._latency_s = float(latency_s)
        self._poll_s = 0.1
        self._mpx_prefix: np.ndarray | None = None
        self._sock = _connect(host, port, timeout_s, self._name)

    def _close_transport(self) -> None:
        self._sock.close()

    def _read_into(self, view: memoryview, wait_s: float) -> int:
        try:
            try:
                n = self._sock.recv_into(view)
            except BlockingIOError:
                readable, _, _ = select.select([self._sock], [], [], wait_s)
                if not readable:
                    return 0
                n = self._sock.recv_into(view)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise StreamEnded(f"the connection failed ({exc})") from None
        if n == 0:
            raise StreamEnded("the peer closed the connection")
        return n

    def _read_message(self, *, what: str, timeout_s: float | None = None) -> tuple[bytes, bytes]:
        """Read one whole message; return (prefix, payload)."""
        prefix = self._read_exact(
            MPX_PREFIX_SIZE, what=f"the MPX prefix of {what}", timeout_s=timeout_s
        )
        size = parse_mpx_prefix(prefix, what=what)
        if size > MAX_MESSAGE_BYTES:
            raise InputError(
                f"{what}: MPX message length {size + 1} exceeds "
                f"{MAX_MESSAGE_BYTES} bytes; the stream is corrupt."
            )
        return prefix, self._read_exact(size, what=what)

    def _open_acquisition(self) -> bytes:
        prefix, payload = self._read_message(
            what="the acquisition header", timeout_s=self._header_timeout_s
        )
        counter_depth = None
        if payload.startswith(b"HDR"):
            self.acquisition_header = parse_acquisition_header(payload)
            counter_depth = self.acquisition_header.counter_depth
            prefix, payload = self._read_message(what="frame 0")
        elif not payload.startswith(b"MQ1"):
            raise InputError(
                f"first message should be the acquisition header (HDR) or a "
                f"frame (MQ1), got {payload[:20]!r}."
            )
        sequence, fmt = parse_frame_header(payload, what="frame 0", counter_depth=counter_depth)
        if len(payload) != fmt.record_size:
            raise InputError(
                f"frame 0: MPX message carries {len(payload)} bytes, but its "
                f"header implies {fmt.header_size} + {fmt.data_size} = {fmt.record_size} "
                f"({fmt.width}x{fmt.height} {fmt.pixel_depth}, counter depth "
                f"{fmt.counter_depth})."
            )
        self._set_first_frame(fmt, sequence, payload)
        self._mpx_prefix = np.frombuffer(prefix, dtype=np.uint8)
        return prefix + payload

    def _check_prefixes(self, rows: np.ndarray) -> tuple[int, Exception | None, str | None]:
        assert self._mpx_prefix is not None
        ok = (rows[:, :MPX_PREFIX_SIZE] == self._mpx_prefix).all(axis=1)
        if ok.all():
            return len(rows), None, None
        k = int(np.argmin(ok))
        index = self.frames_received + k
        what = f"frame {index}"
        try:
            size = parse_mpx_prefix(rows[k, :MPX_PREFIX_SIZE].tobytes(), what=what)
        except InputError as exc:
            return k, exc, None
        if rows[k, MPX_PREFIX_SIZE : MPX_PREFIX_SIZE + 3].tobytes() == b"HDR":
            return k, None, f"a new acquisition started (acquisition header in place of {what})"
        return (
            k,
            InputError(
                f"{what}: MPX message of {size} bytes, but frame 0's was "
                f"{len(rows[k]) - MPX_PREFIX_SIZE}; the frame size changed mid-acquisition."
            ),
            None,
        )

    def _tail_is_next_acquisition(self, tail: np.ndarray) -> bool:
        head = tail[: MPX_PREFIX_SIZE + 3].tobytes()
        return head.startswith(b"MPX,") and head[MPX_PREFIX_SIZE:] == b"HDR"


def _format_host(host: str) -> str:
    """Bracket IPv6 literals for display, as in a URL."""
    return f"[{host}]" if ":" in host else host


def _connect(host: str, port: int, timeout_s: float, name: str) -> socket.socket:
    """Open a non-blocking TCP connection with a large receive buffer."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        raise InputError(f"{name}: cannot connect ({exc}).") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER_BYTES)
    except OSError:
        pass  # the kernel's limit applies; a smaller buffer only costs speed
    sock.setblocking(False)
    return sock
