"""Open a 4D-STEM scan from a file or an in-memory object and read it in batches.

Files go through RosettaSciIO/HyperSpy with lazy reading (``.npy`` is memory-mapped), so only
the scan rows of the batch at hand are in memory. Patterns come out in native byte order and
their original dtype; conversion to float happens inside the preprocessing kernels.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import Gpu4dWarning, InputError
from .arina import arina_master_of
from .readers import check_reader, guess_hdf5_reader
from .scanshape import FlatScan, parse_scan_shape, scan_shape_for

#: Extensions read without HyperSpy's guessing; everything else goes to ``hyperspy.api.load``.
NUMPY_SUFFIXES = (".npy",)
#: The types whose values can exceed ``Dataset.value_limit`` (not datetimes or records, whose
#: 8 bytes the dtype check refuses).
RANGE_CHECKED_TYPES = ("f4", "f8", "i8", "u8")
#: Largest float32; gpu4d preprocesses in float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)


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
    #: (qy, qx) bool or None: detector pixels every pass reads as 0 (the dead and hot pixels
    #: found, see ``gpu4d.engine.read_checked``)
    zeroed_pixels: object = None
    #: counts every pass subtracts from every pixel: the detector's dark level found, see
    #: ``gpu4d.detector_offset`` (0: none)
    offset: float = 0.0
    #: whether every pass replaces transient spikes (``gpu4d.spikes``)
    spikes: bool = True
    #: ``(path, reader, scan_shape)`` with which another process opens the same scan (files
    #: only; None for data in memory): how Dask workers read it (``gpu4d.engine.distributed``)
    reopen: tuple | None = None

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

        return isinstance(self.array, (np.ndarray, BlockfileFrames)) or getattr(
            self.array, "reads_cheaply", False
        )

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
        if patterns.dtype.str[1:] in RANGE_CHECKED_TYPES:
            self._check_value_range(patterns, start)
        return _native(patterns)

    @property
    def value_limit(self) -> float:
        """The largest |value| gpu4d's float32 arithmetic takes: squared differences summed
        over every detector pixel (KMeans distances, L2 norms) stay below float32's maximum."""
        return math.sqrt(FLOAT32_MAX / (4 * math.prod(self.detector_shape)))

    def _check_value_range(self, patterns: np.ndarray, start: int) -> None:
        """Name the first pattern holding a finite value beyond ``value_limit`` (NaN and Inf
        are reported by the preprocessing); two reductions, then a closer look only if needed."""
        limit = self.value_limit
        if not (patterns.max() > limit or patterns.min() < -limit):  # NaN compares False
            return
        beyond = np.abs(patterns.astype(np.float64)) > limit
        beyond &= np.isfinite(patterns)
        if beyond.any():
            index = int(np.argmax(beyond.reshape(len(patterns), -1).any(axis=1)))
            value = float(patterns[index][beyond[index]][0])
            y, x = divmod(start + index, self.shape[1])
            qy, qx = self.detector_shape
            raise InputError(
                f"{self.source}: the pattern at scan position (y={y}, x={x}) holds {value:.3g}, "
                f"too large for gpu4d's float32 arithmetic (squares summed over {qy}x{qx} pixels "
                f"need |value| <= {limit:.2g}); rescale the data first"
            )

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


def open_dataset(source, *, reader: str | None = None, scan_shape=None) -> Dataset:
    """Open a 4D-STEM scan.

    Parameters
    ----------
    source : str, Path, numpy array, dask array, HyperSpy signal or Dataset
        A file (``.blo``, ``.mib`` with its ``.hdr`` (either path), ``.hspy``, ``.zspy``,
        ``.npy``, a DECTRIS ARINA ``*_master.h5``, an EMD/py4DSTEM ``.h5`` or any other format
        RosettaSciIO reads), or data of shape (ny, nx, qy, qx), or frames (n, qy, qx) with
        ``scan_shape``.
    reader : str, optional
        RosettaSciIO reader name, for files whose format several readers claim.
    scan_shape : (ny, nx) or "NYxNX", optional
        The scan shape of data whose navigation is flat or 1-D (no scan shape recorded), or to
        re-read a scan's ny * nx patterns as another grid.
    """
    if isinstance(source, Dataset):
        return source
    scan_shape = parse_scan_shape(scan_shape)
    reader = check_reader(reader)
    if isinstance(source, str) and not source.strip():
        raise InputError("data: the file path is empty")
    if isinstance(source, (str, os.PathLike)):
        dataset = _open_file(Path(source), reader, scan_shape)
    else:
        if reader is not None:
            raise InputError(f"reader={reader!r} applies to files only, not to in-memory data")
        if _is_hyperspy_signal(source):
            dataset = _from_signal(source, f"<HyperSpy {type(source).__name__}>", scan_shape)
        elif hasattr(source, "shape") and hasattr(source, "dtype"):
            dataset = _from_array(source, f"<{type(source).__module__.split('.')[0]} array>", scan_shape)
        else:
            raise InputError(
                f"data: expected a file path, a numpy/dask array or a HyperSpy signal, "
                f"got {type(source).__name__}"
            )
    _check_dtype(dataset)
    return dataset


def _open_file(path: Path, reader: str | None, scan_shape) -> Dataset:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir() and path.suffix != ".zspy":
        raise InputError(f"{path}: is a folder, not a data file")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes)")
    if path.suffix.lower() == ".hdr" and reader is None:
        from .mibfile import mib_for_header

        path = mib_for_header(path)  # the header's data file: what the user meant
    if path.suffix.lower() in NUMPY_SUFFIXES:
        if reader is not None:
            raise InputError(
                f"{path}: reader={reader!r} does not apply to .npy files, which gpu4d reads "
                "with numpy; leave --reader out"
            )
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{path}: not a readable .npy file ({exc})") from exc
        dataset = _from_array(array, str(path), scan_shape)
    else:
        if reader is None:
            master = arina_master_of(path)
            if master is not None:
                raise InputError(
                    f"{path}: is an ARINA data file; give its master file {master.name} instead"
                )
            _check_known_format(path)
            _check_hdf5_signature(path)
            reader = guess_hdf5_reader(path)
        if reader == "Arina":
            dataset = _open_arina(path, scan_shape)
        elif reader in (None, "Blockfile") and path.suffix.lower() == ".blo":
            dataset = _open_blockfile(path, scan_shape)
        else:
            dataset = _open_with_rosettasciio(path, reader, scan_shape)
    _check_dtype(dataset)  # before the first read: the value checks need a numeric type
    dataset.check_readable()
    dataset.reopen = (str(path.resolve()), reader, scan_shape)
    return dataset


def _open_blockfile(path: Path, scan_shape) -> Dataset:
    """A .blo from its own header (``gpu4d.io.blockfile``: the layout and calibrations
    RosettaSciIO reads, without its dask-backed lazy load)."""
    from .blockfile import BlockfileFrames

    header = _check_blockfile_header(path)
    ny, nx, dp = header["ny"], header["nx"], header["dp"]
    frames = BlockfileFrames(path, ny, nx, dp, header["offset"])
    step = header["detector_step"]
    detector_axes = (_calibrated("dy", dp, step, "cm"), _calibrated("dx", dp, step, "cm"))
    if scan_shape is not None and tuple(scan_shape) != (ny, nx):
        dataset = _from_array(frames, str(path), scan_shape)
        dataset.detector_axes = detector_axes
        return dataset
    scan_axes = (_calibrated("y", ny, header["scan_step"][0], "nm"), _calibrated("x", nx, header["scan_step"][1], "nm"))
    return Dataset(frames, scan_axes, detector_axes, str(path), {"title": ""})


def _calibrated(name: str, size: int, scale: float, units: str, offset: float = 0.0) -> Axis:
    """An axis of ``scale`` units per pixel; in pixels when the scale is not a positive number
    (a broken calibration)."""
    if not (np.isfinite(scale) and scale > 0):
        return Axis(name, size)
    return Axis(name, size, float(scale), float(offset), units)


def _open_with_rosettasciio(path: Path, reader: str | None, scan_shape) -> Dataset:
    suffix = path.suffix.lower()
    mib = None
    if reader in (None, "QuantumDetector") and suffix == ".mib":
        from .mibfile import check_mib

        mib = check_mib(path)  # empty, truncated or disagreeing with its .hdr: said here
    signal = _hyperspy_load(path, reader)
    if mib is not None and scan_shape is None and len(signal.data.shape) == 3:
        scan_shape = mib.scan_shape  # ScanY, ScanX of the .hdr, when it records them
    why = None
    if mib is not None and mib.header is None:
        why = f"its header {path.with_suffix('.hdr').name} is not beside it"
    return _from_signal(signal, str(path), scan_shape, why_flat=why)


def _open_arina(path: Path, scan_shape) -> Dataset:
    """A DECTRIS ARINA master file, read in batches (``gpu4d.io.arina``)."""
    from .arina import ArinaFrames

    try:
        frames = ArinaFrames(path)
    except InputError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: cannot read this ARINA file ({type(exc).__name__}: {exc})") from exc
    n = frames.shape[0]
    if scan_shape is None:
        side = math.isqrt(n)
        if side * side != n:
            raise InputError(
                f"{path}: holds {n} frames and records no scan shape (ARINA master files do "
                "not); give it with --scan NYxNX (API scan_shape=(ny, nx))"
            )
        scan_shape = (side, side)
        warnings.warn(
            f"{path}: the master file records no scan shape; reading its {n} frames as a "
            f"square {side}x{side} scan (give --scan NYxNX otherwise)",
            Gpu4dWarning,
            stacklevel=4,
        )
    ny, nx = scan_shape_for(n, scan_shape, str(path))
    qy, qx = frames.shape[1:]
    if frames.calibration:
        q, units = frames.calibration["scale"], frames.calibration["units"]
        detector_axes = (Axis("qy", qy, q, -q * qy / 2, units), Axis("qx", qx, q, -q * qx / 2, units))
    else:
        detector_axes = (Axis("qy", qy), Axis("qx", qx))
    metadata = {"title": path.stem.removesuffix("_master"), "reader": "ARINA (h5py)"}
    if frames.bad_pixels is not None:
        metadata["detector_bad_pixels"] = frames.bad_pixels
    return Dataset(
        FlatScan(frames, (ny, nx)), (Axis("y", ny), Axis("x", nx)), detector_axes, str(path), metadata
    )


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


def _check_hdf5_signature(path: Path) -> None:
    """An .h5/.hdf5/.emd file that is not HDF5 at all: say so, rather than which readers its
    extension would suit."""
    import h5py

    from .readers import HDF5_SUFFIXES

    if path.suffix.lower() in HDF5_SUFFIXES and path.is_file() and not h5py.is_hdf5(path):
        raise InputError(
            f"{path}: not an HDF5 file (the HDF5 signature is missing); the file is corrupt or in "
            "another format"
        )


def _check_blockfile_header(path: Path) -> dict:
    """Check a .blo header against the file size before any pattern is read (a corrupt header
    can describe billions of patterns: RosettaSciIO's reader then never returned); return the
    header."""
    from .blockfile import BLOCKFILE_HEADER, FRAME_HEADER_BYTES, read_header

    size = path.stat().st_size
    header = read_header(path) if size >= BLOCKFILE_HEADER.itemsize else {}
    if not header:
        raise InputError(
            f"{path}: not a NanoMegas blockfile (the header signature is missing); the file is "
            "corrupt or in another format"
        )
    nx, ny, dp = header["nx"], header["ny"], header["dp"]
    if min(nx, ny, dp) == 0:
        raise InputError(
            f"{path}: the blockfile header describes {ny}x{nx} patterns of {dp}x{dp} pixels; "
            "a zero size means the header is corrupt"
        )
    needed = header["offset"] + nx * ny * (FRAME_HEADER_BYTES + dp * dp)
    if needed > size:
        raise InputError(
            f"{path}: the header describes {ny}x{nx} patterns of {dp}x{dp} pixels "
            f"({needed} bytes) but the file has only {size} bytes; the file is truncated or corrupt"
        )
    return header


def _hyperspy_load(path: Path, reader: str | None):
    import hyperspy.api as hs

    # signal_type "": a plain signal; the file's type (e.g. electron_diffraction) would make
    # HyperSpy import the extension that registers it (pyxem: +6 s per load), for nothing
    # gpu4d reads (the data and its axes)
    kwargs = {"lazy": True, "signal_type": ""}
    if reader:
        kwargs["reader"] = reader
    with _quiet_hyperspy():
        try:
            loaded = hs.load(str(path), **kwargs)
        except Exception as exc:  # noqa: BLE001 - readers raise anything on a foreign file
            raise _reader_failure(path, exc) from exc
    if isinstance(loaded, list):
        if not loaded:
            raise InputError(f"{path}: the file holds no data")
        four_d = [s for s in loaded if len(s.data.shape) == 4]
        if not four_d:
            shapes = ", ".join(str(tuple(s.data.shape)) for s in loaded)
            raise InputError(f"{path}: holds signals of shapes {shapes}, none of them 4D")
        loaded = four_d[0]
    return loaded


def _reader_failure(path: Path, exc: Exception) -> InputError:
    """What a reader's exception says about the file, in one line."""
    text = " ".join(str(exc).split())
    if "multiple file readers" in text:
        found = re.search(r"\[(.*?)\]", text)
        names = found[1].replace("'", "") if found else "several"
        return InputError(
            f"{path}: several readers claim this file ({names}); give one with --reader NAME "
            "(API reader=), e.g. --reader EMD for EMD/py4DSTEM files"
        )
    if isinstance(exc, NotImplementedError):
        return InputError(
            f"{path}: cannot read this file as 4D-STEM data (NotImplementedError: {text[:200]})"
        )
    return InputError(
        f"{path}: cannot read this file as 4D-STEM data ({type(exc).__name__}: {text[:300]}); "
        "check the format and that the file is complete"
    )


@contextlib.contextmanager
def _quiet_hyperspy():
    """Silence HyperSpy's log and warnings while loading: gpu4d reports errors itself."""
    logger = logging.getLogger("hyperspy")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        # some readers draw progress bars on stderr (tqdm): a file opens in a second or two
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _is_hyperspy_signal(obj) -> bool:
    return hasattr(obj, "axes_manager") and hasattr(obj, "data")


def _from_signal(signal, source: str, scan_shape=None, why_flat: str | None = None) -> Dataset:
    shape = tuple(signal.data.shape)
    axes_manager = signal.axes_manager
    metadata = {"title": str(signal.metadata.get_item("General.title", ""))}
    sig = axes_manager.signal_axes
    if len(shape) == 4 and axes_manager.navigation_dimension == 2 and len(sig) == 2:
        nav = axes_manager.navigation_axes  # HyperSpy order: x, y
        scan_axes = (_axis(nav[1], "y"), _axis(nav[0], "x"))
        detector_axes = (_axis(sig[1], "qy"), _axis(sig[0], "qx"))
        if scan_shape is None or tuple(scan_shape) == shape[:2]:
            return Dataset(signal.data, scan_axes, detector_axes, source, metadata)
        dataset = _from_array(signal.data, source, scan_shape)
    elif len(shape) == 3 and len(sig) == 2:
        dataset = _from_array(signal.data, source, scan_shape, why_flat)
        detector_axes = (_axis(sig[1], "qy"), _axis(sig[0], "qx"))
    else:
        # e.g. a py4DSTEM file loaded with every axis as a signal axis
        return _from_array(signal.data, source, scan_shape, why_flat, metadata)
    dataset.detector_axes = detector_axes
    dataset.metadata = metadata
    return dataset


def _axis(hs_axis, default_name: str) -> Axis:
    name = hs_axis.name if isinstance(hs_axis.name, str) and hs_axis.name else default_name
    units = hs_axis.units if isinstance(hs_axis.units, str) and hs_axis.units else "px"
    if not getattr(hs_axis, "is_uniform", True):  # a non-uniform axis has no one scale to keep
        warnings.warn(
            f"HyperSpy axis {name!r} is non-uniform; gpu4d keeps only uniform calibrations and "
            "reads it in pixels", Gpu4dWarning, stacklevel=2,
        )
        return Axis(name, int(hs_axis.size))
    return _calibrated(name, int(hs_axis.size), float(hs_axis.scale), units, float(hs_axis.offset))


def default_axes(shape) -> tuple[tuple[Axis, Axis], tuple[Axis, Axis]]:
    ny, nx, qy, qx = shape
    return (Axis("y", ny), Axis("x", nx)), (Axis("qy", qy), Axis("qx", qx))


def _from_array(array, source: str, scan_shape=None, why_flat=None, metadata=None) -> Dataset:
    """A Dataset of a 4-D scan, or of frames (n, qy, qx) / a 4-D scan re-gridded by
    ``scan_shape``."""
    shape = tuple(int(s) for s in array.shape)
    if shape and min(shape) < 1:
        raise InputError(f"{source}: data has an empty axis, shape {shape}")
    if len(shape) == 3 and scan_shape is None:
        n, qy, qx = shape
        why = f" ({why_flat})" if why_flat else ""
        raise InputError(
            f"{source}: holds {n} patterns of {qy}x{qx} in a list, with no scan shape{why}; "
            "give it with --scan NYxNX (API scan_shape=(ny, nx))"
        )
    if len(shape) not in (3, 4):
        what = "a single pattern" if len(shape) == 2 else f"{len(shape)}-D data"
        raise InputError(
            f"{source}: data has shape {shape} ({what}); gpu4d needs a 4D-STEM scan "
            "(scan_y, scan_x, detector_y, detector_x), or frames (n, qy, qx) with --scan NYxNX"
        )
    if scan_shape is not None and tuple(scan_shape) != shape[:2]:
        frames = array if len(shape) == 3 else array.reshape(-1, *shape[2:])
        ny, nx = scan_shape_for(frames.shape[0], scan_shape, source)
        array = FlatScan(frames, (ny, nx))
        shape = array.shape
    scan_axes, detector_axes = default_axes(shape)
    return Dataset(array, scan_axes, detector_axes, source, metadata or {})


def _check_dtype(dataset: Dataset) -> None:
    kind = dataset.dtype.kind
    if kind not in "uif" or dataset.dtype.itemsize > 8:
        raise InputError(
            f"{dataset.source}: data type {dataset.dtype} is not supported; "
            "gpu4d needs integer or floating-point patterns"
        )
