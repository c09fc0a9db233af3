"""Check a Quantum Detectors Merlin ``.mib`` (and its ``.hdr``) before RosettaSciIO reads it.

RosettaSciIO counts frames from the file size, so a cut-short file reads as a smaller scan, an
empty one fails with an IndexError and a ``.hdr`` from another acquisition goes unnoticed. Here
the first frame header gives the size of a frame record, the file size the number of frames the
file holds, and the ``.hdr`` the number the acquisition promised; any disagreement is reported
in words. The header parsers are in ``gpu4d.io.mib_format`` (the live reader's too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .mib_format import (
    FRAME_HEADER_LEAD,
    frame_header_size,
    parse_acquisition_header,
    parse_frame_header,
)


@dataclass(frozen=True)
class MibInfo:
    """What the frame headers and the ``.hdr`` say about a ``.mib``."""

    n_frames: int  # whole frames in the file
    frame_shape: tuple[int, int]
    header: Path | None  # the .hdr beside it, if there is one
    frames_promised: int | None  # "Frames in Acquisition" of the .hdr
    scan_shape: tuple[int, int] | None  # ScanY, ScanX of the .hdr


def mib_for_header(path: Path) -> Path:
    """The ``.mib`` a ``.hdr`` belongs to (same name beside it)."""
    for suffix in (".mib", ".MIB"):
        mib = path.with_suffix(suffix)
        if mib.is_file():
            return mib
    raise InputError(
        f"{path}: is the header of a Merlin acquisition, but its data file "
        f"{path.with_suffix('.mib').name} is not beside it"
    )


def check_mib(path: Path) -> MibInfo:
    """Check ``path`` against its first frame header and its ``.hdr``; InputError if they
    disagree (empty, truncated, a header promising other frames, not a Merlin file)."""
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes); no Merlin frames to read")
    with open(path, "rb") as f:
        lead = f.read(FRAME_HEADER_LEAD)
        header_size = frame_header_size(lead, what=f"{path}: not a Merlin .mib file")
        f.seek(0)
        first = f.read(header_size)
    _, fmt = parse_frame_header(first, what=f"{path}: frame 0")
    n_frames, partial = divmod(size, fmt.record_size)
    hdr, promised, scan_shape = _read_hdr(path)
    described = f"{fmt.record_size}-byte frames ({fmt.shape[0]}x{fmt.shape[1]} {fmt.pixel_depth})"
    if promised is not None and n_frames != promised:
        if n_frames < promised:
            raise InputError(
                f"{path}: its header {hdr.name} promises {promised} frames but the file holds "
                f"{n_frames}{_and_partial(partial)} of {described}; the file is truncated "
                "(or the acquisition was stopped early)"
            )
        raise InputError(
            f"{path}: holds {n_frames} frames but its header {hdr.name} promises {promised}; "
            "the header belongs to another acquisition"
        )
    if partial:
        raise InputError(
            f"{path}: holds {n_frames}{_and_partial(partial)} of {described}; the file is "
            "truncated"
        )
    if n_frames == 0:
        raise InputError(f"{path}: holds no whole frame ({size} bytes); the file is truncated")
    return MibInfo(n_frames, fmt.shape, hdr, promised, scan_shape)


def _and_partial(partial: int) -> str:
    return f" and {partial} bytes of a cut-off one" if partial else ""


def _read_hdr(path: Path):
    """(the .hdr path, its frame count, its scan shape), or Nones when there is none."""
    hdr = path.with_suffix(".hdr")
    if not hdr.is_file():
        return None, None, None
    try:
        header = parse_acquisition_header(hdr.read_bytes())
    except InputError as exc:
        raise InputError(f"{hdr}: not a Merlin acquisition header ({exc})") from None
    return hdr, header.frames_in_acquisition, header.scan_shape
