"""Write results atomically: a reader sees the old result or the new one, never half of one.

Files are written to a hidden temporary file in the destination's own folder and renamed into
place with :func:`os.replace` (a rename within one file system is atomic). A run's outputs go to a
hidden temporary folder beside the results folder, which is renamed into place only when every
output is written (:func:`result_folder`). A crash, an exception or Ctrl-C leaves the previous
results untouched and no temporary files behind.

Errors from the file system are raised as :class:`gpu4d.errors.OutputError`, naming the path and
the reason, so the CLI can print them as one line.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from gpu4d.arrays import to_host
from gpu4d.errors import OutputError

__all__ = [
    "RESULT_MARKER",
    "atomic_write",
    "atomic_save_npy",
    "atomic_write_json",
    "check_output_folder",
    "result_folder",
]


def _read_umask() -> int:
    # os.umask can only be read by setting it; do it once, at import, before any threads write.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
# mkstemp/mkdtemp create 0600/0700 entries; results should get the usual permissions instead.
_FILE_MODE = 0o666 & ~_UMASK
_FOLDER_MODE = 0o777 & ~_UMASK


# Every results folder carries this file. An existing folder is replaced (--overwrite) only when
# it is an earlier gpu4d result: it carries the marker (or, from versions before the marker, a
# gpu4d summary) and holds nothing but the files gpu4d writes. A scan, a mask, a notebook or any
# other file in it makes gpu4d refuse: deleting it would lose data nobody asked to lose.
RESULT_MARKER = ".gpu4d-result"
_EARLIER_SUMMARIES = ("summary.json", "sweep.json", "progress.json")
_RESULT_FILE = re.compile(
    r"(labels|centroids|mean_patterns|mask|centres|confidence|std_patterns|counts)\.npy"
    r"|(summary|sweep|progress)\.json"
    r"|clusters\.(hspy|zspy)"
    r"|(labels|centroids|mean_patterns|centres|confidence|scores|label_maps)\.png"
    r"|\.gpu4d-result"
    r"|\..+\.tmp"  # a temporary file an interrupted atomic_write left behind
)
_RESULT_SUBFOLDER = re.compile(r"k\d{2,}")  # a sweep's per-k results


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


@contextlib.contextmanager
def _as_output_error(path: Path, action: str = "cannot write results to") -> Iterator[None]:
    """Re-raise an ``OSError`` from the body as an ``OutputError`` naming ``path``."""
    try:
        yield
    except OutputError:
        raise
    except OSError as err:
        raise OutputError(f"{action} '{path}': {_reason(err)}") from err


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def atomic_write(
    path: str | os.PathLike[str],
    write_fn: Callable[[IO[Any]], object],
    *,
    mode: str = "wb",
) -> Path:
    """Write a file through ``write_fn`` and move it into place atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file. Its folder must exist; an existing file is replaced.
    write_fn : callable
        Called once with an open file object (a temporary file in the destination's folder);
        it writes the content and must not close the file.
    mode : {"wb", "w"}
        Binary, or text (UTF-8).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    OutputError
        The file cannot be created, written or moved into place.
    ValueError
        ``mode`` is neither ``"wb"`` nor ``"w"``.

    Notes
    -----
    If ``write_fn`` raises, the temporary file is removed, ``path`` is unchanged and the exception
    propagates as it is (an ``OSError`` from it becomes an ``OutputError``).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode={mode!r} should be 'wb' or 'w'.")
    path = Path(path)
    with _as_output_error(path):
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with _as_output_error(path):
            encoding = None if mode == "wb" else "utf-8"
            os.close(fd)
            # opened by name so that fh.name is the path, for writers that open files themselves
            with open(tmp, mode, encoding=encoding) as fh:
                write_fn(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, _FILE_MODE)
            os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    return path


def atomic_save_npy(path: str | os.PathLike[str], array: Any) -> Path:
    """Save ``array`` in ``.npy`` format, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, used as given (no ``.npy`` suffix is added).
    array : array_like
        Any array numpy can convert; a CuPy array is copied to the host first.
        Object arrays are refused (``allow_pickle=False``).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    host = np.asarray(to_host(array))
    return atomic_write(path, lambda fh: np.save(fh, host, allow_pickle=False))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON with sorted keys, atomically.

    numpy scalars and arrays become numbers and lists, paths become strings, mapping keys become
    strings, and NaN or infinite floats become ``null`` so the file is strict JSON.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    obj : object
        Dicts, lists, tuples, strings, numbers, booleans, None, numpy scalars and arrays, paths.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    TypeError
        ``obj`` holds something JSON cannot represent; nothing is written.
    """
    # Serialise before opening anything, so a TypeError leaves no file behind.
    text = json.dumps(_to_jsonable(obj), sort_keys=True, indent=2, allow_nan=False) + "\n"
    return atomic_write(path, lambda fh: fh.write(text), mode="w")


def _to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` recursively into types :func:`json.dumps` writes as strict JSON."""
    if isinstance(obj, np.ndarray):
        return _to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _to_jsonable(obj.item())
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        return {str(_to_jsonable(key)): _to_jsonable(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(item) for item in obj]
    raise TypeError(f"cannot write an object of type {type(obj).__name__} as JSON: {obj!r:.80}")


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(path.anchor)  # pragma: no cover - the root always exists


def _refuse_dangerous_overwrite(path: Path) -> None:
    # --overwrite deletes the old folder: never let a slip of the keyboard delete a home folder
    # or the folder the user is working in.
    real = Path(os.path.realpath(path))
    cwd = Path(os.path.realpath(os.getcwd()))
    home = Path(os.path.realpath(Path.home()))
    if real == real.parent or real == home or real == cwd or real in cwd.parents:
        raise OutputError(
            f"refusing to overwrite '{path}': it is the root, your home folder, or holds the "
            "current folder; choose a dedicated results folder"
        )


def _refuse_inputs_inside(path: Path, inputs: Iterable[str | os.PathLike[str]]) -> None:
    real = Path(os.path.realpath(path))
    for item in inputs:
        source = Path(os.path.realpath(Path(item).expanduser()))
        if source == real or real in source.parents:
            raise OutputError(
                f"refusing to write results to '{path}': it holds the input '{item}', which "
                "gpu4d only ever reads; choose a results folder outside it"
            )
        if source in real.parents:
            raise OutputError(
                f"refusing to write results to '{path}': it lies inside the input '{item}', "
                "which gpu4d only ever reads; choose a results folder outside it"
            )


def _foreign_entry(folder: Path, top: Path) -> Path | None:
    """The first entry of ``folder`` that gpu4d does not write, or None."""
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink() or not (entry.is_file() or entry.is_dir()):
            return entry
        if entry.is_dir():
            if folder != top or not _RESULT_SUBFOLDER.fullmatch(entry.name):
                return entry
            inner = _foreign_entry(entry, top)
            if inner is not None:
                return inner
        elif not _RESULT_FILE.fullmatch(entry.name):
            return entry
    return None


def _is_marked_result(folder: Path) -> bool:
    if (folder / RESULT_MARKER).is_file():
        return True
    for name in _EARLIER_SUMMARIES:  # results written before the marker existed
        try:
            summary = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(summary, dict) and ("versions" in summary or "frames_expected" in summary):
            return True
    return False


def _refuse_unless_earlier_result(path: Path) -> None:
    if path.is_symlink():  # replacing drops the link itself, never what it points to
        return
    with _as_output_error(path, "cannot read the existing results folder"):
        if not any(path.iterdir()):
            return  # an empty folder: nothing to lose
        if not _is_marked_result(path):
            raise OutputError(
                f"refusing to replace '{path}': it is not an earlier gpu4d result (no "
                f"{RESULT_MARKER} marker); --overwrite only replaces gpu4d's own results folders"
            )
        foreign = _foreign_entry(path, path)
    if foreign is not None:
        raise OutputError(
            f"refusing to replace '{path}': it holds '{foreign.relative_to(path)}', which gpu4d "
            "did not write; move it out first or choose another results folder"
        )


def check_output_folder(
    path: str | os.PathLike[str],
    overwrite: bool = False,
    *,
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Check, before any work starts, that results can be written to the folder ``path``.

    Nothing is created or changed.

    Parameters
    ----------
    path : str or os.PathLike
        The results folder; it and its parents may not exist yet.
    overwrite : bool
        Whether an existing results folder may be replaced. Only an earlier gpu4d result is
        ever replaced: see :data:`RESULT_MARKER`.
    inputs : iterable of paths
        The files (or folders) the run reads. ``path`` may neither hold one nor lie inside one.

    Returns
    -------
    pathlib.Path
        ``path`` as an absolute path (``~`` expanded, symbolic links kept).

    Raises
    ------
    OutputError
        ``path`` is empty; ``path`` exists and ``overwrite`` is False, or it exists and is not a
        folder, or it is not an earlier gpu4d result; it holds an input or lies inside one; the
        nearest existing parent is not a folder or is not writable.
    """
    if not os.fspath(path).strip():
        raise OutputError("the results folder (--out) is an empty path; name a folder")
    path = Path(os.path.abspath(Path(path).expanduser()))
    _refuse_inputs_inside(path, inputs)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise OutputError(f"cannot write results to '{path}': it exists and is not a folder")
        if not overwrite:
            raise OutputError(
                f"results folder '{path}' already exists; pass --overwrite to replace it"
            )
        _refuse_dangerous_overwrite(path)
        _refuse_unless_earlier_result(path)
    # The folder is created in its parent (or the parent's parents are created first): the
    # nearest one that exists must be a folder we may write into.
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise OutputError(f"cannot write results to '{path}': '{base}' is not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write results to '{path}': Permission denied ('{base}')")
    return path


@contextlib.contextmanager
def result_folder(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> Iterator[Path]:
    """Collect a run's outputs in a temporary folder and move it to ``path`` when all are written.

    Parameters
    ----------
    path : str or os.PathLike
        The results folder. Missing parent folders are created.
    overwrite : bool
        Replace an existing folder at ``path``, if it is an earlier gpu4d result. The old folder
        is renamed aside, the new one renamed into place, and only then is the old one deleted.
    inputs : iterable of paths
        What the run reads: ``path`` may neither hold one nor lie inside one.

    Yields
    ------
    pathlib.Path
        A fresh, hidden folder beside ``path`` (same parent) to write every output into; it
        holds only the :data:`RESULT_MARKER` file.

    Raises
    ------
    OutputError
        On entry, before the body runs: see :func:`check_output_folder`. On exit: the folder
        cannot be moved into place; the message says where the finished results were left.

    Notes
    -----
    If the body raises, the temporary folder is deleted, nothing at ``path`` changes and the
    exception propagates.

    Examples
    --------
    >>> with result_folder("out/run1") as tmp:  # doctest: +SKIP
    ...     atomic_save_npy(tmp / "labels.npy", labels)
    """
    inputs = list(inputs)
    path = check_output_folder(path, overwrite, inputs=inputs)
    with _as_output_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        atomic_write_json(tmp / RESULT_MARKER, {"written_by": "gpu4d"})
        yield tmp
    except BaseException:
        _remove_quietly(tmp)
        raise
    try:
        _commit(tmp, path, overwrite, inputs)
    except OutputError:
        raise
    except BaseException:
        _remove_quietly(tmp)
        raise


def _commit(tmp: Path, path: Path, overwrite: bool, inputs: list) -> None:
    """Move the finished folder ``tmp`` to ``path``, replacing an old one if ``overwrite``."""
    with _as_output_error(path):
        os.chmod(tmp, _FOLDER_MODE)
    if overwrite and (path.exists() or path.is_symlink()):
        # checked again: the folder may have changed while the run worked (a long sweep or a
        # live run); keep the finished results where they are if it is no longer ours to replace
        try:
            check_output_folder(path, overwrite=True, inputs=inputs)
        except OutputError as err:
            raise OutputError(f"{err}; the finished results are in '{tmp}'") from err
    if not (path.exists() or path.is_symlink()):
        _move_into_place(tmp, path)
        return
    if not overwrite:  # something appeared at path while we worked: keep what we made
        raise OutputError(
            f"results folder '{path}' already exists; pass --overwrite to replace it; the "
            f"finished results are in '{tmp}'"
        )
    aside = path.with_name(f".{path.name}.old-{secrets.token_hex(4)}")
    with _as_output_error(path, "cannot move the old results aside from"):
        os.rename(path, aside)
    try:
        _move_into_place(tmp, path)
    except OutputError:
        with contextlib.suppress(OSError):
            os.rename(aside, path)
        raise
    try:
        if aside.is_symlink():  # the old "folder" was a link: drop the link, not its target
            aside.unlink()
        else:
            shutil.rmtree(aside)
    except OSError as err:
        warnings.warn(
            f"new results are in '{path}', but the old ones could not be deleted from "
            f"'{aside}': {_reason(err)}",
            RuntimeWarning,
            stacklevel=4,
        )


def _move_into_place(tmp: Path, path: Path) -> None:
    try:
        os.rename(tmp, path)
    except OSError as err:
        # Keep the finished results: a long run should not be lost to a failed rename.
        raise OutputError(
            f"cannot write results to '{path}': {_reason(err)}; the finished results are in "
            f"'{tmp}'"
        ) from err
