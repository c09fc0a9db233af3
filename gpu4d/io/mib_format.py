"""Quantum Detectors Merlin (MIB) headers and pixel data: parse, validate, decode, encode.

The same frame records travel in ``.mib`` files and on the Merlin TCP data port. A record is
an ASCII frame header (``MQ1,<sequence>,<header size>,<chips>,<width>,<height>,<pixel depth>,
<layout>,<chip select>,...``, NUL-padded to ``header size`` bytes) followed by the pixel data.
On the TCP port each record, and the acquisition header (``HDR,...``) before them, is wrapped
in a message ``MPX,<10-digit length>,<payload>`` whose length counts the payload plus one
(the comma after the length field).

Pixel data are big-endian unsigned integers (``U08``/``U16``/``U32``/``U64``) or, with
``R64``, the detector's raw readout, in which the counter depth of the MQ1A extension selects
one of four packings (see :func:`decode_pixels`). Everything here works on whole batches of
records at once with numpy; nothing loops over pixels in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gpu4d.errors import InputError

#: Bytes of ``MPX,<10 digits>,`` in front of every TCP message.
MPX_PREFIX_SIZE = 15
#: Largest frame accepted (a 2x2 quad of U64 pixels is 2 MiB); more means a corrupt header.
MAX_FRAME_BYTES = 256 << 20

_FRAME_MAGIC = b"MQ1,"
_DIGITS = np.array([100000, 10000, 1000, 100, 10, 1], dtype=np.int64)
_U_DEPTHS = {"U08": 1, "U16": 2, "U32": 4, "U64": 8}
_RAW_DEPTHS = (1, 6, 12, 24)
_RAW_DTYPES = {1: np.uint8, 6: np.uint8, 12: np.uint16, 24: np.uint32}


@dataclass(frozen=True)
class AcquisitionHeader:
    """The acquisition header (``HDR``) that opens a Merlin acquisition.

    Attributes
    ----------
    fields : dict of str to str
        Every ``key: value`` line, keys without the trailing colon.
    frames_in_acquisition : int or None
        ``Frames in Acquisition (Number)``; None when absent or 0 (continuous mode).
    counter_depth : int or None
        ``Counter Depth (number)``, used for raw frames that lack the MQ1A extension.
    scan_shape : tuple of int or None
        ``(ScanY, ScanX)`` when both keys are present, else None.
    """

    fields: dict[str, str]
    frames_in_acquisition: int | None
    counter_depth: int | None
    scan_shape: tuple[int, int] | None


@dataclass(frozen=True)
class FrameFormat:
    """What one frame record looks like; every frame of an acquisition shares it.

    Attributes
    ----------
    header_size : int
        Bytes of the frame header, padding included.
    num_chips : int
        Number of Medipix chips read out.
    width, height : int
        Image size as written in the header (raw 2x2 data give the chips side by side).
    pixel_depth : str
        ``U08``, ``U16``, ``U32``, ``U64`` or ``R64`` (raw).
    layout : str
        Sensor layout, e.g. ``1x1``, ``2x2``, ``2x2G``, ``Nx1``.
    counter_depth : int or None
        Counter depth in bits (1, 6, 12 or 24) from the MQ1A extension or the acquisition
        header; None when neither gives it (then only ``U..`` data can be decoded).
    data_size : int
        Bytes of pixel data per frame.
    shape : tuple of int
        ``(qy, qx)`` of a decoded frame.
    dtype : numpy.dtype
        Native-order dtype of a decoded frame.
    fixed_span : tuple of int
        Byte range of the header fields from header size to chip select; identical in every
        frame of an acquisition, so batches are checked by comparing these bytes.
    """

    header_size: int
    num_chips: int
    width: int
    height: int
    pixel_depth: str
    layout: str
    counter_depth: int | None
    data_size: int
    shape: tuple[int, int]
    dtype: np.dtype
    fixed_span: tuple[int, int] = field(compare=False)

    @property
    def record_size(self) -> int:
        """Bytes of one frame record in a ``.mib`` file: header plus pixel data."""
        return self.header_size + self.data_size

    @property
    def is_raw(self) -> bool:
        """Whether the pixel data are in the detector's raw (``R64``) packing."""
        return self.pixel_depth == "R64"


def parse_mpx_prefix(prefix: bytes, *, what: str) -> int:
    """Return the payload size announced by a ``MPX,<length>,`` message prefix.

    Parameters
    ----------
    prefix : bytes
        The first :data:`MPX_PREFIX_SIZE` bytes of a message.
    what : str
        What the message should be, for the error message (e.g. ``"frame 12"``).

    Returns
    -------
    int
        Bytes of payload that follow the prefix (the length field minus one).

    Raises
    ------
    InputError
        If the prefix is not ``MPX,`` + 10 decimal digits + ``,`` or announces no payload.
    """
    digits = prefix[4:14]
    if (
        len(prefix) != MPX_PREFIX_SIZE
        or prefix[:4] != b"MPX,"
        or prefix[14:15] != b","
        or not digits.isdigit()
    ):
        raise InputError(
            f"{what}: malformed MPX message prefix {bytes(prefix)!r}; "
            "expected b'MPX,' + 10 decimal digits + b','."
        )
    length = int(digits)
    if length < 2:
        raise InputError(f"{what}: MPX message length {length} should be >= 2.")
    return length - 1


def parse_acquisition_header(payload: bytes) -> AcquisitionHeader:
    """Parse the text of a Merlin acquisition header (``HDR,`` ... ``End``).

    Parameters
    ----------
    payload : bytes
        The header, as sent on the TCP port or stored in a ``.hdr`` file (latin-1 text,
        possibly padded with spaces or NULs).

    Returns
    -------
    AcquisitionHeader

    Raises
    ------
    InputError
        If the text does not start with ``HDR`` or a numeric field does not parse.
    """
    if not payload.startswith(b"HDR"):
        raise InputError(
            f"acquisition header should start with b'HDR', got {bytes(payload[:20])!r}."
        )
    fields: dict[str, str] = {}
    for line in payload.decode("latin-1").splitlines()[1:]:
        if line.strip().rstrip("\x00 ").startswith("End"):
            break
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    frames = _optional_int(fields, "Frames in Acquisition (Number)")
    scan_x = _optional_int(fields, "ScanX")
    scan_y = _optional_int(fields, "ScanY")
    return AcquisitionHeader(
        fields=fields,
        frames_in_acquisition=frames or None,
        counter_depth=_optional_int(fields, "Counter Depth (number)"),
        scan_shape=(scan_y, scan_x) if scan_x and scan_y else None,
    )


def _optional_int(fields: dict[str, str], key: str) -> int | None:
    """Return ``int(fields[key])``, None when the key is absent."""
    if key not in fields:
        return None
    try:
        return int(fields[key])
    except ValueError:
        raise InputError(
            f"acquisition header field {key!r}={fields[key]!r} should be an integer."
        ) from None


#: Bytes of a frame header that always hold its header size field.
FRAME_HEADER_LEAD = 32


def frame_header_size(start: bytes, *, what: str) -> int:
    """Return the header size field of a frame header from its first bytes.

    Parameters
    ----------
    start : bytes
        At least the first :data:`FRAME_HEADER_LEAD` bytes of the header.
    what : str
        What the header is, for the error message.

    Raises
    ------
    InputError
        If the bytes do not start a ``MQ1`` frame header.
    """
    fields = bytes(start[:FRAME_HEADER_LEAD]).split(b",")
    size = fields[2] if len(fields) > 3 else b""  # the sequence field may exceed 6 digits
    if start[:4] != _FRAME_MAGIC or not size.isdigit():
        raise InputError(
            f"{what}: frame header should start with b'MQ1,<sequence>,<header size>,', "
            f"got {bytes(start[:24])!r}."
        )
    return int(size)


def parse_frame_header(
    header: bytes, *, what: str, counter_depth: int | None = None
) -> tuple[int, FrameFormat]:
    """Parse one ``MQ1`` frame header.

    Parameters
    ----------
    header : bytes
        At least the header (``header size`` bytes); more is ignored.
    what : str
        What this header is, for error messages (e.g. ``"frame 0"``).
    counter_depth : int, optional
        Counter depth from the acquisition header, used when the frame header has no MQ1A
        extension.

    Returns
    -------
    sequence : int
        The frame's sequence number (1 for the first frame of an acquisition).
    FrameFormat
        The layout of this frame's record.

    Raises
    ------
    InputError
        If a field is missing or malformed, or the pixel format cannot be decoded.
    """
    size = frame_header_size(header, what=what)
    if len(header) < size:
        raise InputError(
            f"{what}: frame header is {len(header)} bytes, its size field says {size}."
        )
    text = header[:size].decode("latin-1").rstrip("\x00 ")
    parts = text.split(",")
    if len(parts) < 9:
        raise InputError(
            f"{what}: frame header has {len(parts)} fields, should have >= 9: {text[:80]!r}."
        )
    try:
        sequence, num_chips, width, height = (int(parts[i]) for i in (1, 3, 4, 5))
    except ValueError:
        raise InputError(
            f"{what}: sequence, chips, width and height should be integers, "
            f"got {parts[1]!r}, {parts[3]!r}, {parts[4]!r}, {parts[5]!r}."
        ) from None
    if width <= 0 or height <= 0:
        raise InputError(f"{what}: image size {width}x{height} should be positive.")
    depth = _mq1a_counter_depth(parts, what=what) or counter_depth
    pixel_depth, layout = parts[6].strip(), parts[7].strip()
    shape, dtype, data_size = _pixel_format(
        pixel_depth, layout, num_chips, width, height, depth, what=what
    )
    if data_size > MAX_FRAME_BYTES:
        raise InputError(
            f"{what}: a {width}x{height} {pixel_depth} frame would hold {data_size} bytes, "
            f"more than {MAX_FRAME_BYTES}; the header is corrupt."
        )
    fixed_start = len(",".join(parts[:2])) + 1
    fixed_stop = len(",".join(parts[:9]))
    return sequence, FrameFormat(
        header_size=size,
        num_chips=num_chips,
        width=width,
        height=height,
        pixel_depth=pixel_depth,
        layout=layout,
        counter_depth=depth,
        data_size=data_size,
        shape=shape,
        dtype=dtype,
        fixed_span=(fixed_start, fixed_stop),
    )


def _mq1a_counter_depth(parts: list[str], *, what: str) -> int | None:
    """Return the counter depth of the MQ1A extension (3rd field after ``MQ1A``), if any."""
    if "MQ1A" not in parts:
        return None
    i = parts.index("MQ1A") + 3
    if i >= len(parts) or not parts[i].strip().isdigit():
        raise InputError(f"{what}: MQ1A extension has no counter depth field.")
    return int(parts[i])


def _pixel_format(
    pixel_depth: str,
    layout: str,
    num_chips: int,
    width: int,
    height: int,
    counter_depth: int | None,
    *,
    what: str,
) -> tuple[tuple[int, int], np.dtype, int]:
    """Return (decoded shape, native dtype, data bytes) of one frame, or raise InputError."""
    if pixel_depth in _U_DEPTHS:
        nbytes = _U_DEPTHS[pixel_depth]
        return (height, width), np.dtype(f"=u{nbytes}"), height * width * nbytes
    if pixel_depth != "R64":
        raise InputError(
            f"{what}: pixel depth {pixel_depth!r} is not supported; "
            "expected one of U08, U16, U32, U64, R64."
        )
    if counter_depth not in _RAW_DEPTHS:
        raise InputError(
            f"{what}: raw (R64) frame with counter depth {counter_depth!r}; decoding needs "
            "1, 6, 12 or 24 from the MQ1A extension or the acquisition header."
        )
    npix = height * width
    data_size = {1: npix // 8, 6: npix, 12: 2 * npix, 24: 2 * npix}[counter_depth]
    if npix % 64:
        raise InputError(
            f"{what}: raw (R64) image of {width}x{height} pixels is not a whole number of "
            "64-bit readout words."
        )
    dtype = np.dtype(_RAW_DTYPES[counter_depth])
    if layout == "1x1":
        # 24-bit raw frames are two 12-bit frames side by side in the header's width.
        qx = width // 2 if counter_depth == 24 else width
        return (height, qx), dtype, data_size
    if layout in ("2x2", "2x2G"):
        if counter_depth == 24 or num_chips != 4 or width != 4 * height:
            raise InputError(
                f"{what}: raw quad frames are decoded for 4 chips of {height}x{height} pixels "
                f"and counter depth 1, 6 or 12; this one has layout {layout!r}, "
                f"chips={num_chips}, width={width}, height={height}, "
                f"counter depth={counter_depth}."
            )
        side = 2 * height + (2 if layout == "2x2G" else 0)
        return (side, side), dtype, data_size
    raise InputError(
        f"{what}: raw (R64) data with sensor layout {layout!r} is not supported "
        "(header field 8, 'layout'); supported raw layouts are 1x1, 2x2 and 2x2G. "
        "Set the detector to a U08/U16/U32 pixel depth instead."
    )


def check_records(
    records: np.ndarray,
    *,
    fmt: FrameFormat,
    reference: np.ndarray,
    first_sequence: int,
    first_index: int,
    header_offset: int = 0,
) -> tuple[int, InputError | None]:
    """Check a batch of frame records against the first frame of the acquisition.

    Parameters
    ----------
    records : numpy.ndarray
        ``(b, record bytes)`` uint8; each row starts with ``header_offset`` bytes of message
        prefix (0 in files) followed by the frame header.
    fmt : FrameFormat
        Format of the acquisition's first frame.
    reference : numpy.ndarray
        ``(fmt.header_size,)`` uint8, the first frame's header.
    first_sequence : int
        Sequence number of frame 0 of the acquisition.
    first_index : int
        Acquisition index of ``records[0]``.
    header_offset : int
        Where the frame header starts in each row.

    Returns
    -------
    n_good : int
        Number of leading rows that are valid frames.
    error : InputError or None
        Why row ``n_good`` is not, None when all are.
    """
    headers = records[:, header_offset : header_offset + fmt.header_size]
    ok = _fast_header_ok(headers, reference, fmt.fixed_span)
    expected = first_sequence + first_index + np.arange(len(records))
    ok &= _sequence_numbers(headers) == expected
    if ok.all():
        return len(records), None
    # Slow path, only for the rows the byte comparison rejected: parse them fully, which
    # accepts legitimate variations (e.g. a wider sequence field) and names the fault.
    for k in np.flatnonzero(~ok):
        what = f"frame {first_index + k}"
        try:
            sequence, other = parse_frame_header(
                headers[k].tobytes(), what=what, counter_depth=fmt.counter_depth
            )
        except InputError as exc:
            return int(k), exc
        if other != fmt:
            return int(k), InputError(
                f"{what}: frame format changed mid-acquisition from {_describe(fmt)} "
                f"to {_describe(other)}."
            )
        if sequence != expected[k]:
            return int(k), InputError(
                f"{what}: sequence number {sequence}, expected {expected[k]}; "
                "a frame is missing, repeated or out of order."
            )
    return len(records), None


def _fast_header_ok(
    headers: np.ndarray, reference: np.ndarray, fixed_span: tuple[int, int]
) -> np.ndarray:
    """Per row: starts with ``MQ1,``, 6-digit sequence field, fixed fields equal the reference."""
    a, b = fixed_span
    ok = (headers[:, :4] == reference[:4]).all(axis=1)
    ok &= headers[:, 10] == ord(",")
    ok &= (headers[:, a:b] == reference[a:b]).all(axis=1)
    return ok


def _sequence_numbers(headers: np.ndarray) -> np.ndarray:
    """Decode the 6-digit sequence field of each header; -1 where it is not 6 digits."""
    digits = headers[:, 4:10].astype(np.int64) - ord("0")
    seq = digits @ _DIGITS
    seq[((digits < 0) | (digits > 9)).any(axis=1)] = -1
    return seq


def _describe(fmt: FrameFormat) -> str:
    """Short text of a frame format for error messages."""
    return (
        f"{fmt.width}x{fmt.height} {fmt.pixel_depth} layout {fmt.layout} "
        f"({fmt.header_size}-byte header, {fmt.data_size} data bytes)"
    )


def decode_pixels(data: np.ndarray, fmt: FrameFormat) -> np.ndarray:
    """Decode the pixel data of a batch of frames.

    Parameters
    ----------
    data : numpy.ndarray
        ``(b, fmt.data_size)`` uint8; rows may be strided views into a receive buffer, but
        each row must be contiguous.
    fmt : FrameFormat

    Returns
    -------
    numpy.ndarray
        ``(b, qy, qx)`` new C-contiguous array in ``fmt.dtype`` (native byte order),
        oriented as RosettaSciIO/HyperSpy (and so ``gpu4d.open_dataset``) show ``.mib``
        files: the rows of the wire order reversed (LiberTEM keeps the wire order), so
        a scan clustered live and from its file gives the same centroid images.

    Notes
    -----
    Raw (``R64``) packings, per 8-byte word of the readout: counter depth 1 packs 64 pixels
    as bits, the word's bytes in reverse order and each byte least significant bit first;
    6 holds 8 one-byte pixels in reverse order; 12 holds 4 big-endian 16-bit pixels in
    reverse order; 24 sends two 12-bit frames one after the other, the first holding the
    high 12 bits. Raw quad (2x2) frames give, per readout row, the rows of chips 4, 3, 2, 1;
    chips 3 and 4 form the bottom half, flipped in x and y (LiberTEM's convention; 2x2G
    adds a 2-pixel zero gap between the chips).
    """
    b = data.shape[0]
    qy, qx = fmt.shape
    out = np.empty((b, qy, qx), dtype=fmt.dtype)
    flipped = out[:, ::-1, :]  # write wire-order rows bottom-up: the flip costs nothing
    if not fmt.is_raw:
        # Copy the bytes, then swap them in the aligned output: faster than a byte-swapping
        # cast straight from the receive buffer, where rows sit at odd, unaligned offsets.
        nbytes = fmt.dtype.itemsize
        out_bytes = flipped.view(np.uint8)
        np.copyto(out_bytes, data.reshape(b, qy, qx * nbytes))
        if nbytes > 1 and np.little_endian:
            out.byteswap(inplace=True)
        return out
    pixels = _unscramble_raw(data, fmt.counter_depth)
    if fmt.layout == "1x1":
        np.copyto(flipped, pixels.reshape(b, qy, qx))
    else:
        _assemble_quad(pixels, fmt, flipped)
    return out


def _unscramble_raw(data: np.ndarray, counter_depth: int | None) -> np.ndarray:
    """Undo the raw packing: ``(b, bytes)`` uint8 to ``(b, pixels)`` in readout order."""
    b = data.shape[0]
    if counter_depth == 1:
        words = data.reshape(b, -1, 8)[:, :, ::-1]
        return np.unpackbits(words, axis=-1, bitorder="little").reshape(b, -1)
    if counter_depth == 6:
        return data.reshape(b, -1, 8)[:, :, ::-1].reshape(b, -1)
    if counter_depth == 12:
        words = data.view(">u2").reshape(b, -1, 4)[:, :, ::-1]
        return words.astype(np.uint16).reshape(b, -1)
    half = data.shape[1] // 2
    high = _unscramble_raw(data[:, :half], 12).astype(np.uint32)
    low = _unscramble_raw(data[:, half:], 12)
    high <<= 12
    high |= low
    return high


def _assemble_quad(pixels: np.ndarray, fmt: FrameFormat, out: np.ndarray) -> None:
    """Place the four chips of raw 2x2 readout rows ``[4 | 3 | 2 | 1]`` into ``out``.

    ``out`` is ``(b, side, side)``, side = 2 * chip (+ 2 for the 2x2G gap, left at 0).
    """
    b = pixels.shape[0]
    c = fmt.height
    gap = 2 if fmt.layout == "2x2G" else 0
    chips = pixels.reshape(b, c, 4, c)
    if gap:
        out[:, c : c + gap, :] = 0
        out[:, :, c : c + gap] = 0
    lo = c + gap
    out[:, :c, :c] = chips[:, :, 3, :]
    out[:, :c, lo:] = chips[:, :, 2, :]
    out[:, lo:, :c] = chips[:, ::-1, 1, ::-1]
    out[:, lo:, lo:] = chips[:, ::-1, 0, ::-1]


# -- writing, for simulators, tests and benchmarks --------------------------------------


def frame_header(
    sequence: int,
    shape: tuple[int, int],
    *,
    pixel_depth: str = "U16",
    counter_depth: int = 12,
    header_size: int = 384,
) -> bytes:
    """Return a single-chip ``MQ1`` frame header with an MQ1A extension, NUL-padded.

    Parameters
    ----------
    sequence : int
        Sequence number (1 for the first frame).
    shape : tuple of int
        ``(qy, qx)`` of the frame.
    pixel_depth : str
        ``U08``, ``U16``, ``U32`` or ``U64``.
    counter_depth : int
        Counter depth in bits written to the MQ1A extension.
    header_size : int
        Size of the padded header; Merlin uses 384 for single-chip frames.

    Returns
    -------
    bytes
    """
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
        raise ValueError(
            f"frame header of {len(text)} bytes does not fit header_size={header_size}."
        )
    return text.ljust(header_size, b"\x00")


def acquisition_header(
    n_frames: int, *, counter_depth: int = 12, scan_shape: tuple[int, int] | None = None
) -> bytes:
    """Return a minimal Merlin acquisition header (the text of a ``.hdr`` file).

    Parameters
    ----------
    n_frames : int
        ``Frames in Acquisition (Number)``.
    counter_depth : int
        ``Counter Depth (number)``.
    scan_shape : tuple of int, optional
        ``(ScanY, ScanX)``; also sets ``Frames per Trigger`` to ScanX.

    Returns
    -------
    bytes
    """
    per_trigger = scan_shape[1] if scan_shape else 1
    lines = [
        "HDR,\t",
        "Assembly Size (NX1, 2X2):\t   1x1",
        f"Counter Depth (number):\t{counter_depth}",
        f"Frames in Acquisition (Number):\t{n_frames}",
        f"Frames per Trigger (Number):\t{per_trigger}",
    ]
    if scan_shape:
        lines += [f"ScanX:\t{scan_shape[1]}", f"ScanY:\t{scan_shape[0]}"]
    lines.append("End\t")
    return "\r\n".join(lines).encode("latin-1")


def encode_frames(
    frames: np.ndarray, *, counter_depth: int | None = None, first_sequence: int = 1
) -> bytes:
    """Encode frames as ``.mib`` records (header + big-endian pixels), as Merlin writes them.

    Parameters
    ----------
    frames : numpy.ndarray
        ``(b, qy, qx)`` uint8, uint16 or uint32 (written as U08, U16, U32), oriented as
        :func:`decode_pixels` returns them (rows are written in reverse), so that decoding
        gives ``frames`` back.
    counter_depth : int, optional
        Written to the MQ1A extension; defaults to 6, 12 or 24 by dtype.
    first_sequence : int
        Sequence number of ``frames[0]``.

    Returns
    -------
    bytes
    """
    frames = np.asarray(frames)
    nbytes = frames.dtype.itemsize
    if frames.ndim != 3 or frames.dtype.kind != "u" or nbytes not in (1, 2, 4):
        raise ValueError(
            f"frames should be (b, qy, qx) uint8/16/32, got {frames.shape} {frames.dtype}."
        )
    depth = counter_depth or {1: 6, 2: 12, 4: 24}[nbytes]
    pixel_depth = f"U{8 * nbytes:02d}"
    shape = frames.shape[1:]
    b = frames.shape[0]
    header_size = 384
    records = np.empty((b, header_size + frames[0].nbytes), dtype=np.uint8)
    for i in range(b):
        records[i, :header_size] = np.frombuffer(
            frame_header(
                first_sequence + i,
                shape,
                pixel_depth=pixel_depth,
                counter_depth=depth,
                header_size=header_size,
            ),
            dtype=np.uint8,
        )
    wire = frames[:, ::-1].astype(f">u{nbytes}")
    records[:, header_size:] = wire.reshape(b, -1).view(np.uint8)
    return records.tobytes()
