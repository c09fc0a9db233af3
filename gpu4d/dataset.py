"""Open a 4D-STEM scan from a file or an in-memory object and read it in batches.

Files go through RosettaSciIO/HyperSpy with lazy reading (``.npy`` is memory-mapped), so only
the scan rows of the batch at hand are in memory. Patterns come out in native byte order and
their original dtype; conversion to float happens inside the preprocessing kernels.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError

#: Extensions read without HyperSpy's guessing; everything else goes to ``hyperspy.api.load``.
NUMPY_SUFFIXES = (".npy",)


@dataclass(frozen=True)
class Axis:
    """Calibration of one axis (HyperSpy's DataAxis, reduced to what gpu4d keeps)."""

    name: str
    size: int
    scale: float = 1.0
    offset: float = 0.0
    units: str = "px"

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "size": self.size,
            "scale": self.scale,
            "offset": self.offset,
            "units": self.units,
        }


@dataclass
class Dataset:
    """A 4D-STEM scan ``(ny, nx, qy, qx)`` that is read in batches of patterns.

    Attributes
    ----------
    array : numpy array, numpy memmap or dask array of shape (ny, nx, qy, qx)
    scan_axes : (Axis y, Axis x)
    detector_axes : (Axis qy, Axis qx)
    source : str
        The file path, or a description of the in-memory object.
    """

    array: object
    scan_axes: tuple[Axis, Axis]
    detector_axes: tuple[Axis, Axis]
    source: str
    metadata: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def scan_shape(self) -> tuple[int, int]:
        return self.shape[:2]

    @property
    def detector_shape(self) -> tuple[int, int]:
        return self.shape[2:]

    @property
    def n_patterns(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype).newbyteorder("=")

    @property
    def reads_cheaply(self) -> bool:
        """True when a batch costs no more than a memory copy: arrays in memory, memory maps
        (.npy) and .blo files (file reads); not dask arrays, whose reads copy twice."""
        from .blockfile import BlockfileFrames

        return isinstance(self.array, (np.ndarray, BlockfileFrames))

    def read_patterns(self, start: int, stop: int) -> np.ndarray:
        """Patterns ``start:stop`` in scan order as a (stop - start, qy, qx) native array."""
        nx = self.shape[1]
        first_row, last_row = start // nx, (stop - 1) // nx + 1
        try:
            rows = self.array[first_row:last_row]
            if hasattr(rows, "compute"):
                # in this thread: dask's thread pool competed with the kernels' and BLAS's
                # threads on small machines (a sweep's first pass read 4x slower)
                rows = rows.compute(scheduler="synchronous")
            rows = np.asarray(rows)
        except (OSError, ValueError, MemoryError, EOFError, RuntimeError) as exc:
            raise InputError(
                f"{self.source}: cannot read scan rows {first_row}..{last_row - 1} "
                f"({type(exc).__name__}: {exc}); the file may be truncated or corrupt"
            ) from exc
        flat = rows.reshape(-1, *self.detector_shape)
        offset = first_row * nx
        patterns = flat[start - offset : stop - offset]
        return _native(patterns)

    def batches(self, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, patterns)`` over the whole scan, ``batch_size`` patterns at a time."""
        for start in range(0, self.n_patterns, batch_size):
            stop = min(start + batch_size, self.n_patterns)
            yield start, self.read_patterns(start, stop)

    def check_readable(self) -> None:
        """Read the last pattern now, so a truncated file fails before a long run starts."""
        self.read_patterns(self.n_patterns - 1, self.n_patterns)


def _native(array: np.ndarray) -> np.ndarray:
    """The array in native byte order (CuPy and numba need it); big-endian MIB data is not."""
    if array.dtype == np.float16:  # numba kernels have no half-precision reads
        return array.astype(np.float32)
    if array.dtype.byteorder not in ("=", "|"):
        return array.astype(array.dtype.newbyteorder("="))
    return array


def open_dataset(source, *, reader: str | None = None) -> Dataset:
    """Open a 4D-STEM scan.

    Parameters
    ----------
    source : str, Path, numpy array, dask array, HyperSpy signal or Dataset
        A file (``.blo``, ``.mib`` with its ``.hdr``, ``.hspy``, ``.zspy``, ``.npy`` or any other
        format RosettaSciIO reads), or data of shape (ny, nx, qy, qx).
    reader : str, optional
        RosettaSciIO reader name, for files whose format several readers claim.
    """
    if isinstance(source, Dataset):
        return source
    if isinstance(source, (str, os.PathLike)):
        dataset = _open_file(Path(source), reader)
    elif _is_hyperspy_signal(source):
        dataset = _from_signal(source, "<HyperSpy signal>")
    elif hasattr(source, "shape") and hasattr(source, "dtype"):
        dataset = _from_array(source, f"<{type(source).__module__.split('.')[0]} array>")
    else:
        raise InputError(
            f"data: expected a file path, a numpy/dask array or a HyperSpy signal, "
            f"got {type(source).__name__}"
        )
    _check_dtype(dataset)
    return dataset


def _open_file(path: Path, reader: str | None) -> Dataset:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir() and path.suffix != ".zspy":
        raise InputError(f"{path}: is a folder, not a data file")
    if path.suffix.lower() in NUMPY_SUFFIXES:
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{path}: not a readable .npy file ({exc})") from exc
        dataset = _from_array(array, str(path))
    else:
        blockfile_header = None
        if reader is None:
            _check_known_format(path)
            if path.suffix.lower() == ".blo":
                blockfile_header = _check_blockfile_header(path)
        signal = _hyperspy_load(path, reader)
        dataset = _from_signal(signal, str(path))
        if blockfile_header is not None:
            dataset.array = _blockfile_patterns(path, blockfile_header, dataset.shape)
        if path.suffix.lower() == ".mib":
            _check_mib_frame_count(path, dataset.n_patterns)
    dataset.check_readable()
    return dataset


def _check_mib_frame_count(path: Path, n_patterns: int) -> None:
    """A cut-short .mib reads as a smaller scan (rsciio counts frames from the file size): compare
    with the frame count its .hdr announces."""
    header = path.with_suffix(".hdr")
    try:
        lines = header.read_text(errors="replace").splitlines()
    except OSError:
        return  # no header beside it: nothing to compare with
    for line in lines:
        if line.startswith("Frames in Acquisition"):
            try:
                expected = int(line.split(":", 1)[1].strip())
            except (IndexError, ValueError):
                return
            if expected > n_patterns:
                raise InputError(
                    f"{path}: holds {n_patterns} frames but {header.name} announces {expected}; "
                    "the file is truncated (or the acquisition was stopped early)"
                )
            return


def _check_known_format(path: Path) -> None:
    """Refuse an extension no RosettaSciIO reader claims: HyperSpy would hand the file to its
    image reader, which fails with an unrelated error."""
    from rsciio import IO_PLUGINS

    ext = path.suffix.lower().lstrip(".")
    for plugin in IO_PLUGINS:
        names = [plugin["name"], *(plugin.get("name_aliases") or [])]
        if ext in (e.lower() for e in plugin["file_extensions"]) or ext in (n.lower() for n in names):
            return
    raise InputError(
        f"{path}: unknown file format '{path.suffix or '(no extension)'}'; gpu4d reads .blo, "
        ".mib (+.hdr), .hspy, .zspy, .npy and the other RosettaSciIO formats (give the reader "
        "name with reader=/--reader if the extension is not the usual one)"
    )


def _check_blockfile_header(path: Path) -> dict:
    """Check a .blo header against the file size before rsciio trusts it (with a corrupt
    header rsciio memory-maps billions of patterns and never returns); return the header."""
    from .blockfile import BLOCKFILE_HEADER, FRAME_HEADER_BYTES, read_header

    size = path.stat().st_size
    header = read_header(path) if size >= BLOCKFILE_HEADER.itemsize else {}
    if not header:
        raise InputError(
            f"{path}: not a NanoMegas blockfile (the header signature is missing); the file is "
            "corrupt or in another format"
        )
    nx, ny, dp = header["nx"], header["ny"], header["dp"]
    needed = header["offset"] + nx * ny * (FRAME_HEADER_BYTES + dp * dp)
    if needed > size:
        raise InputError(
            f"{path}: the header describes {ny}x{nx} patterns of {dp}x{dp} pixels "
            f"({needed} bytes) but the file has only {size} bytes; the file is truncated or corrupt"
        )
    return header


def _blockfile_patterns(path: Path, header: dict, shape: tuple[int, int, int, int]):
    """The .blo's patterns, read by file reads (``gpu4d.blockfile``), after checking that its
    ``header`` (``blockfile.read_header``) agrees with the shape RosettaSciIO reported."""
    from .blockfile import BlockfileFrames

    described = (header["ny"], header["nx"], header["dp"], header["dp"])
    if described != tuple(shape):
        raise InputError(
            f"{path}: the blockfile header describes shape {described} but RosettaSciIO read "
            f"{tuple(shape)}; the file is corrupt"
        )
    return BlockfileFrames(path, *described[:3], header["offset"])


def _hyperspy_load(path: Path, reader: str | None):
    import hyperspy.api as hs

    kwargs = {"lazy": True}
    if reader:
        kwargs["reader"] = reader
    with _quiet_hyperspy():
        try:
            loaded = hs.load(str(path), **kwargs)
        except Exception as exc:  # noqa: BLE001 - readers raise anything on a foreign file
            raise InputError(
                f"{path}: cannot read this file as 4D-STEM data "
                f"({type(exc).__name__}: {str(exc)[:300]}); check the format and that the "
                "file is complete"
            ) from exc
    if isinstance(loaded, list):
        four_d = [s for s in loaded if len(s.data.shape) == 4]
        if not four_d:
            shapes = ", ".join(str(tuple(s.data.shape)) for s in loaded)
            raise InputError(f"{path}: holds signals of shapes {shapes}, none of them 4D")
        loaded = four_d[0]
    return loaded


@contextlib.contextmanager
def _quiet_hyperspy():
    """Silence HyperSpy's log and warnings while loading: gpu4d reports errors itself."""
    logger = logging.getLogger("hyperspy")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _is_hyperspy_signal(obj) -> bool:
    return hasattr(obj, "axes_manager") and hasattr(obj, "data")


def _from_signal(signal, source: str) -> Dataset:
    shape = tuple(signal.data.shape)
    axes_manager = signal.axes_manager
    if len(shape) != 4:
        raise InputError(
            f"{source}: data has shape {shape}; gpu4d needs a 4D-STEM scan "
            "(scan_y, scan_x, detector_y, detector_x)"
        )
    if axes_manager.navigation_dimension == 2 and axes_manager.signal_dimension == 2:
        nav = axes_manager.navigation_axes  # HyperSpy order: x, y
        sig = axes_manager.signal_axes
        scan_axes = (_axis(nav[1], "y"), _axis(nav[0], "x"))
        detector_axes = (_axis(sig[1], "qy"), _axis(sig[0], "qx"))
    else:
        # e.g. a .npy or py4DSTEM file loaded with every axis as a signal axis
        scan_axes, detector_axes = _default_axes(shape)
    metadata = {"title": str(signal.metadata.get_item("General.title", ""))}
    return Dataset(signal.data, scan_axes, detector_axes, source, metadata)


def _axis(hs_axis, default_name: str) -> Axis:
    name = hs_axis.name if isinstance(hs_axis.name, str) and hs_axis.name else default_name
    units = hs_axis.units if isinstance(hs_axis.units, str) and hs_axis.units else "px"
    return Axis(name, int(hs_axis.size), float(hs_axis.scale), float(hs_axis.offset), units)


def _default_axes(shape) -> tuple[tuple[Axis, Axis], tuple[Axis, Axis]]:
    ny, nx, qy, qx = shape
    return (Axis("y", ny), Axis("x", nx)), (Axis("qy", qy), Axis("qx", qx))


def _from_array(array, source: str) -> Dataset:
    shape = tuple(array.shape)
    if len(shape) != 4:
        raise InputError(
            f"{source}: data has shape {shape}; gpu4d needs a 4D-STEM scan "
            "(scan_y, scan_x, detector_y, detector_x)"
        )
    if min(shape) < 1:
        raise InputError(f"{source}: data has an empty axis, shape {shape}")
    scan_axes, detector_axes = _default_axes(shape)
    return Dataset(array, scan_axes, detector_axes, source)


def _check_dtype(dataset: Dataset) -> None:
    kind = dataset.dtype.kind
    if kind not in "uif" or dataset.dtype.itemsize > 8:
        raise InputError(
            f"{dataset.source}: data type {dataset.dtype} is not supported; "
            "gpu4d needs integer or floating-point patterns"
        )
