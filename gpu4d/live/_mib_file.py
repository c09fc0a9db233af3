"""Frames from a ``.mib`` file that a Merlin is still writing."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

from gpu4d.errors import InputError
from gpu4d.live._base import check_n_frames
from gpu4d.io.mib_format import (
    FRAME_HEADER_LEAD,
    AcquisitionHeader,
    frame_header_size,
    parse_acquisition_header,
    parse_frame_header,
)
from gpu4d.live._records import RecordSource, StreamEnded


class GrowingMibSource(RecordSource):
    """Follow a ``.mib`` file as it is written, yielding frames as they are completed.

    The file need not exist yet. Frames are read as they appear; a frame whose bytes are
    only partly written waits for the rest. The acquisition ends after the expected number
    of frames (``n_frames``, else ``Frames in Acquisition`` of the ``.hdr`` file next to the
    ``.mib``), or, when neither is known, once the file has not grown for
    ``idle_timeout_s`` with no frame cut off. A finished file is simply read through.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.mib`` file (a ``.hdr`` path is taken to mean the ``.mib`` beside it).
    n_frames : int, optional
        Frames to read; overrides the ``.hdr`` file.
    poll_s : float
        Pause between looks at a file that has not grown.
    idle_timeout_s : float
        How long the file may stay the same size (or absent) before the stream ends.

    Attributes
    ----------
    detector_shape : tuple of int or None
        ``(qy, qx)``, known after the first frame.
    expected_frames : int or None
        Frames the acquisition will have, when known.
    frames_received : int
        Frames yielded so far.
    acquisition_header : AcquisitionHeader or None
        The parsed ``.hdr`` file, when there is one.
    scan_shape : tuple of int or None
        ``(ny, nx)`` from the header's ScanY/ScanX, when present.

    Raises
    ------
    InputError
        If the folder of ``path`` does not exist.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        n_frames: int | None = None,
        poll_s: float = 0.05,
        idle_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(check_n_frames(n_frames))
        path = Path(path)
        if path.suffix.lower() == ".hdr":
            path = path.with_suffix(".mib")
        if not path.parent.is_dir():
            raise InputError(f"{path}: folder {path.parent} does not exist.")
        self.path = path
        self._name = str(path)
        self._poll_s = self._latency_s = float(poll_s)
        self._idle_timeout_s = float(idle_timeout_s)
        self._file: io.FileIO | None = None

    def _close_transport(self) -> None:
        if self._file is not None:
            self._file.close()

    def _read_into(self, view: memoryview, wait_s: float) -> int:
        if self._file is None:
            try:
                self._file = io.FileIO(self.path, "rb")
            except FileNotFoundError:
                time.sleep(wait_s)
                return 0
        n = self._file.readinto(view)
        if n:
            return n
        time.sleep(wait_s)
        return self._file.readinto(view) or 0

    def _open_acquisition(self) -> bytes:
        try:
            start = self._read_exact(FRAME_HEADER_LEAD, what="frame 0")
        except StreamEnded as end:
            if self._file is None:
                raise StreamEnded(f"{end}; the file does not exist") from None
            raise
        size = frame_header_size(start, what="frame 0")
        header = start + self._read_exact(max(size - len(start), 0), what="frame 0")
        self.acquisition_header = self._read_hdr_file()
        depth = self.acquisition_header.counter_depth if self.acquisition_header else None
        sequence, fmt = parse_frame_header(header, what="frame 0", counter_depth=depth)
        data = self._read_exact(fmt.data_size, what="frame 0")
        self._set_first_frame(fmt, sequence, header)
        return header + data

    def _read_hdr_file(self) -> AcquisitionHeader | None:
        """Parse the ``.hdr`` file beside the ``.mib``, None when there is none."""
        hdr = self.path.with_suffix(".hdr")
        try:
            text = hdr.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return parse_acquisition_header(text)
        except InputError as exc:
            raise InputError(f"{hdr}: {exc}") from None
