"""Which reader opens a file: the ``reader`` argument checked against RosettaSciIO's readers,
and the reader chosen for HDF5 files that several RosettaSciIO readers claim."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

#: Extensions of HDF5 files gpu4d looks inside to choose the reader itself.
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".emd", ".nxs")


def reader_names() -> list[str]:
    """The names RosettaSciIO's readers go by (``hs.load(..., reader=NAME)``), sorted."""
    from rsciio import IO_PLUGINS

    return sorted({p["name"] for p in IO_PLUGINS}, key=str.lower)


def check_reader(reader) -> str | None:
    """The RosettaSciIO reader name ``reader`` stands for (case-insensitive; aliases too), or
    an InputError that lists the valid names."""
    if reader is None:
        return None
    from rsciio import IO_PLUGINS

    if isinstance(reader, str) and reader.strip():
        wanted = reader.strip().lower()
        for plugin in IO_PLUGINS:
            names = [plugin["name"], *(plugin.get("name_aliases") or [])]
            if wanted in (n.lower() for n in names):
                return plugin["name"]
    raise InputError(
        f"reader {reader!r} is not a reader gpu4d knows; choose one of: {', '.join(reader_names())}"
    )


def guess_hdf5_reader(path: Path) -> str | None:
    """``"Arina"`` for a DECTRIS master file, ``"EMD"`` for an EMD / py4DSTEM (emdfile) file,
    None for other files (RosettaSciIO then chooses, or says the file is ambiguous)."""
    if path.suffix.lower() not in HDF5_SUFFIXES:
        return None
    import h5py

    from .arina import is_arina_master

    if is_arina_master(path):
        return "Arina"
    try:
        with h5py.File(path, "r") as f:
            if _is_emd(f):
                return "EMD"
    except OSError:
        return None
    return None


def _is_emd(f) -> bool:
    """EMD 0.2 / Prismatic / py4DSTEM files tag groups with ``emd_group_type`` and the file
    (or its top group) with ``version_major``."""
    if "emd_group_type" in f.attrs or "version_major" in f.attrs:
        return True
    return any(
        "emd_group_type" in getattr(f[name], "attrs", {}) for name in list(f)[:20]
    )
