"""DECTRIS ARINA (NeXus/HDF5) scans: a ``*_master.h5`` whose ``/entry/data/data_NNNNNN`` link to
``*_data_NNNNNN.h5`` files of frames (n, qy, qx), bitshuffle/LZ4-compressed.

RosettaSciIO's Arina reader loads the whole scan into memory ("Lazy loading is not supported");
here frames are read in batches with h5py (``hdf5plugin`` registers the compression filter),
one chunk of frames at a time, so a scan larger than memory can be clustered. The master file
records no scan shape: ``--scan NYxNX`` gives it (a square scan is assumed otherwise).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import InputError

#: Planck constant x speed of light in eV nm, for the electron wavelength.
_HC_EV_NM = 1239.841984
_ELECTRON_REST_EV = 510998.95


def is_arina_master(path: Path) -> bool:
    """True for an HDF5 file laid out as a DECTRIS master file (``/entry/data/data_*``)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            data = f.get("entry/data")
            if data is None or not isinstance(data, h5py.Group):
                return False
            return any(name.startswith("data_") for name in data) and "entry/instrument/detector" in f
    except OSError:
        return False


def arina_master_of(path: Path) -> Path | None:
    """The master file beside an ARINA data file ``X_data_000001.h5``, or None."""
    name = path.name
    if "_data_" not in name:
        return None
    master = path.with_name(name[: name.rindex("_data_")] + "_master.h5")
    return master if master.is_file() else None


def _import_h5():
    import h5py

    try:
        import hdf5plugin  # noqa: F401 - registers the bitshuffle/LZ4 filter with h5py
    except ImportError:
        raise InputError(
            "reading DECTRIS ARINA files needs the hdf5plugin package: pip install hdf5plugin"
        ) from None
    return h5py


class ArinaFrames:
    """Array-like (n, qy, qx) of the frames of an ARINA master file: ``frames[a:b]`` reads
    frames a..b-1 from the data files, chunk by chunk."""

    ndim = 3
    reads_cheaply = False

    def __init__(self, master: Path):
        h5py = _import_h5()
        self.path = str(master)
        self.parts: list[tuple[str, int]] = []  # (dataset path in the master, frames)
        shapes, dtypes = set(), set()
        with h5py.File(master, "r") as f:
            group = f["entry/data"]
            for name in sorted(n for n in group if n.startswith("data_")):
                link = group.get(name, getlink=True)
                try:
                    dset = group[name]
                except KeyError:
                    target = getattr(link, "filename", "?")
                    raise InputError(
                        f"{master}: its data file {target} is missing; keep the "
                        "*_data_*.h5 files beside the master file"
                    ) from None
                if dset.ndim != 3:
                    raise InputError(
                        f"{master}: {name} has shape {dset.shape}; expected frames (n, qy, qx)"
                    )
                self.parts.append((f"entry/data/{name}", int(dset.shape[0])))
                shapes.add(tuple(int(s) for s in dset.shape[1:]))
                dtypes.add(np.dtype(dset.dtype))
            self.calibration = _calibration(f)
            self.bad_pixels = _pixel_mask(f)
        if not self.parts:
            raise InputError(f"{master}: the master file links to no data")
        if len(shapes) != 1 or len(dtypes) != 1:
            raise InputError(f"{master}: its data files disagree on frame shape or type")
        self.shape = (sum(n for _, n in self.parts), *shapes.pop())
        self.dtype = dtypes.pop()

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("ARINA frames are read by slices, e.g. frames[3:7]")
        h5py = _import_h5()
        start, stop, _ = index.indices(self.shape[0])
        stop = max(start, stop)
        out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        with h5py.File(self.path, "r") as f:
            first = 0
            for name, n in self.parts:
                a, b = max(start, first), min(stop, first + n)
                if a < b:
                    f[name].read_direct(out, np.s_[a - first : b - first], np.s_[a - start : b - start])
                first += n
        return out


def _calibration(f) -> dict | None:
    """Reciprocal-space pixel size (1/nm per detector pixel) from the detector geometry, when
    the master file records a camera length (it is 0 in files written without one)."""
    try:
        det = f["entry/instrument/detector"]
        pixel = float(det["x_pixel_size"][()])
        distance = float(det["detector_distance"][()])
        energy = float(det["detectorSpecific/photon_energy"][()])  # the beam energy, in eV
    except (KeyError, TypeError, ValueError):
        return None
    if not (pixel > 0 and distance > 0 and energy > 0):
        return None
    # relativistic electron wavelength, nm
    wavelength = _HC_EV_NM / math.sqrt(energy * (energy + 2 * _ELECTRON_REST_EV))
    return {"scale": pixel / (distance * wavelength), "units": "1/nm"}


def _pixel_mask(f) -> np.ndarray | None:
    """The detector's own bad-pixel mask (True = bad), if it records one with any pixel set."""
    try:
        mask = np.asarray(f["entry/instrument/detector/detectorSpecific/pixel_mask"][()]) != 0
    except (KeyError, TypeError, ValueError):
        return None
    return mask if mask.any() else None
