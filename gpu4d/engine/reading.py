"""Reading a scan's patterns for a pass: checked for non-finite values, the detector's offset
subtracted, bad pixels read as 0."""

from __future__ import annotations

import numpy as np

from ..detector_offset import subtract_offset
from ..spikes import CheckedFrames, remove_spikes
from ..io.dataset import Dataset
from ..errors import InputError


def check_finite(batch: np.ndarray, dataset: Dataset, start: int) -> None:
    """Reject NaN/Inf with the scan position of the first bad pattern."""
    if batch.dtype.kind != "f":
        return
    finite = np.isfinite(batch).reshape(batch.shape[0], -1).all(axis=1)
    if not finite.all():
        index = start + int(np.argmin(finite))
        y, x = divmod(index, dataset.scan_shape[1])
        raise InputError(
            f"{dataset.source}: the pattern at scan position (y={y}, x={x}) contains NaN or Inf "
            "values; clean or crop the data first"
        )


def read_checked(
    dataset: Dataset, start: int, stop: int, wanted: np.ndarray | None = None, checked: CheckedFrames | None = None,
) -> np.ndarray:
    """Patterns ``start:stop`` (or only those of the sorted scan indices ``wanted`` among them),
    checked for non-finite values, ``dataset.offset`` subtracted (``gpu4d.detector_offset``),
    ``dataset.zeroed_pixels`` read as 0, spikes replaced if ``dataset.spikes`` (``gpu4d.spikes``;
    ``checked``: what this run's earlier reads found).

    Why zero them and not only mask them: alignment samples every pattern at shifted
    positions, so a hot pixel left in the raw pattern would land beside its masked position,
    somewhere else in every pattern, and be clustered as a feature of the descan.
    """
    zeroed = None if dataset.zeroed_pixels is None else np.nonzero(dataset.zeroed_pixels)

    def read(begin, end):
        batch = dataset.read_patterns(begin, end)
        check_finite(batch, dataset, begin)
        return corrected(batch, dataset.offset, zeroed)

    if not dataset.spikes:
        batch = read(start, stop)
        return batch if wanted is None else batch[wanted - start]
    return _despiked(read, start, stop, dataset.n_patterns, dataset.scan_shape, wanted, checked)


def corrected(batch: np.ndarray, offset: float, zeroed=None) -> np.ndarray:
    """Patterns (b, qy, qx) as every pass reads them: ``offset`` subtracted
    (``gpu4d.detector_offset``) and the ``zeroed`` pixels (``np.nonzero`` of a (qy, qx) mask,
    or None) read as 0. A new array when either applies (made once): the input is never
    written. Live runs correct their stored frames with it too."""
    has_zeroed = zeroed is not None and zeroed[0].size > 0
    if offset:
        batch = subtract_offset(batch, offset)
    elif has_zeroed:
        batch = np.array(batch)
    if has_zeroed:
        batch[:, zeroed[0], zeroed[1]] = 0
    return batch


def read_stored(
    frames: np.ndarray, received: int, start: int, stop: int, scan_shape, offset: float, zeroed=None, spikes: bool = True,
) -> np.ndarray:
    """Frames ``[start, stop)`` of a live run's store ``frames`` (the scan in acquisition order,
    ``[0, received)`` received) as ``read_checked`` reads a file: ``corrected``, and with
    ``spikes`` their spikes replaced against the neighbours that have arrived (all of them for
    a frame whose right and lower neighbours are in, which is what a live classifier waits for)."""

    def read(begin, end):
        return corrected(frames[begin:end], offset, zeroed)

    return _despiked(read, start, stop, received, scan_shape) if spikes else read(start, stop)


def _despiked(read, start: int, stop: int, available: int, scan_shape, wanted=None, checked=None) -> np.ndarray:
    """Frames ``[start, stop)`` (or those of the sorted scan indices ``wanted`` among them) with
    their spikes replaced (``gpu4d.spikes``). ``read(begin, end)`` returns the scan's frames
    ``[begin, end)`` corrected, for any ``end <= available``. The batch is read with the frame
    beside it in its first and last scan rows; a frame with candidates also with the frames above
    and below it, whose scan rows are read whole, once per batch (readers read whole rows anyway,
    and with many spikes a row was read once for each of its frames that had one)."""
    nx = scan_shape[1]
    before = 1 if start % nx else 0
    after = 1 if stop % nx and stop < available else 0
    block = read(start - before, stop + after)
    rows = {}

    def read_frame(index):
        if index >= available:
            return None
        row = index // nx
        if row not in rows:
            rows[row] = read(row * nx, min((row + 1) * nx, available))
        return rows[row][index - row * nx]

    positions = slice(before, before + stop - start) if wanted is None else wanted - (start - before)
    block_index = np.arange(start - before, stop + after)
    return remove_spikes(block, block_index, positions, scan_shape, read_frame, checked)[0]


def read_part(dataset: Dataset, partition, indices, checked: CheckedFrames | None = None) -> np.ndarray:
    """The patterns of ``partition`` a pass reads (``indices`` from ``rows_in_partition``): all
    of them, or a sample's. A sample on few scan rows (a grid of patterns: every few rows) is
    read row run by row run, not the whole partition; a sample on most rows in one read."""
    if isinstance(indices, slice):
        return read_checked(dataset, indices.start, indices.stop, checked=checked)
    nx = dataset.scan_shape[1]
    rows = np.unique(indices // nx)
    if 2 * rows.size * nx > partition.stop - partition.start:
        return read_checked(dataset, partition.start, partition.stop, indices, checked)
    pieces = []
    for run in np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1):
        start = max(int(run[0]) * nx, partition.start)
        stop = min((int(run[-1]) + 1) * nx, partition.stop)
        wanted = indices[(indices >= start) & (indices < stop)]
        pieces.append(read_checked(dataset, start, stop, wanted, checked))
    return np.concatenate(pieces)
