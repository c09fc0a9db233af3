"""Transient spikes: a very bright pixel (or a few) in one frame only, taken out on read.

Cosmic rays and X-rays hitting an integrating camera leave such spikes in single frames. Each one
wrecks its pattern under per-pattern max normalization: the spike becomes the pattern's maximum,
so everything else in it is scaled down to near nothing and the pattern lands far from its
region. Measured on diffsims scans (5 Cu grains and a 3% band, 1,500 counts; 2026-12-01): one
5,000-count pixel in 2% of the frames gave ARI 0.96 and k = 7 for 6; in 10% of them 0.81; in 30%
0.47; a 500-count pixel in 10% of them 0.44-0.47.

The rule: a pixel is a spike when it reads more than ``FACTOR`` times the largest value within
one detector pixel of it in the (up to) four frames beside it in the scan, plus ``LEVEL`` times
the mean of the frame's positive values. It is then read as the largest value of that pixel in
those frames. Within one pixel, not at the pixel: a sharp spot moved by a pixel between two probe
positions (descan, a jittering beam) is no spike.

* Why the scan neighbours and not the detector neighbours: a Bragg spot can be a single bright
  pixel on the detector (a sharp spot on a coarse detector, a kinematical simulation), but
  neighbouring probe positions share it; a pattern on a region's edge has at least one neighbour
  inside the region (on abTEM scans the two neighbours in the scan row alone were not enough:
  a pattern at the end of a row, or between two others of other grains, lost its spots).
* Why the margin scales with the frame's mean positive value: counts scale with the detector's
  gain, and so does that mean (one electron's worth of counts at low dose, more at high), so the
  rule needs no gain. On a counting detector at 50 counts per pattern the margin is about 8
  counts, which Poisson noise beside neighbours reading 0 does not reach.
* Cost: the two neighbours in the scan row are in the batch being read (with one frame more at
  either end), so every frame is first checked against those; only a frame with candidates has
  the frames above and below it read as well, and only its candidates that stand above all four
  are replaced.

What it cannot see: a spike at the same pixel of two neighbouring frames. What it takes out that
is real: a pixel over 4x brighter than anywhere within a pixel of it in each of its four scan
neighbours, which only a one-pattern feature has, or a sharp spot that jumps by 2 px or more
from one probe position to the next (a descan changes by far less per step). ``spikes=False``
(``--keep-spikes``) keeps every pixel as it is.

Live runs: the frame below a pattern arrives a scan row later, and without it the first pattern
of a grain (its top corner, whose other neighbours are in other grains) would lose its spots.
So ``live --model`` classifies a frame once the frames right of and below it have arrived (a
scan row and one frame behind the detector; all at the end), and reads it with all its
neighbours, as ``classify`` does: its labels equal ``classify``'s. Live clustering's preview map
reads frames as they come, without this rule; the map it refines at the end is
``gpu4d.cluster``'s, with it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .errors import InputError
from .kernels.spikes import replace_spikes_cpu_kernel, row_candidates_float_kernel, row_candidates_int_kernel

#: A spike reads more than ``FACTOR`` times the largest of its scan neighbours' values ...
FACTOR = 4
#: ... plus ``LEVEL`` times the mean positive value of its frame.
LEVEL = 8.0


def parse_spikes(value) -> bool:
    """The ``spikes`` option: True (replace them, the default) or False (keep them)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise InputError(f"spikes={value!r} should be True (replace transient spikes, the default) or False (keep them)")


class CheckedFrames:
    """Which frames of a scan have been checked for spikes, and which of them have candidates
    (frames to look at with all four neighbours). Kept by an executor for one run, whose
    passes read every frame with the same offset and bad pixels, so that a frame is checked
    once per run, not once per pass (the check was a fifth of the seed-sized scan's time)."""

    def __init__(self, n_patterns: int):
        self.state = np.full(n_patterns, -1, np.int8)  # -1 unchecked, 0 clean, 1 candidate


def remove_spikes(
    block: np.ndarray, block_index: np.ndarray, positions, scan_shape: tuple[int, int],
    read_frame: Callable[[int], np.ndarray | None], checked: CheckedFrames | None = None,
) -> tuple[np.ndarray, int]:
    """Frames ``block[positions]`` with their spikes replaced, and how many there were.

    ``block`` (b, qy, qx) holds frames of a scan of ``scan_shape`` as read here (offset
    subtracted, bad pixels zeroed), ``block_index`` (b,) the flat scan index of each; a frame's
    neighbours in its scan row are the frames beside it in ``block`` when they are the ones
    beside it in the scan (so a batch is read with one frame more at either end).
    ``read_frame(index)`` returns the frame of that scan index as read here, or None where it has
    not arrived (live): the frames above and below that are not in ``block`` are read with it,
    only for the rare frame with candidates. ``positions``: a slice or sorted indices
    into ``block``; for a slice without spikes the frames are a view of ``block``, which is never
    written. ``checked``: what earlier reads of this run found (read and updated).
    """
    ny, nx = scan_shape
    block = np.ascontiguousarray(block)
    block_index = np.asarray(block_index, np.int64)
    frames = block[positions]
    view = isinstance(positions, slice)  # frames is a view of block (else a copy)
    if view:
        positions = np.arange(*positions.indices(block.shape[0]))
    positions = np.asarray(positions, np.int64)
    if positions.size == 0 or ny * nx < 2:
        return frames, 0
    index = block_index[positions]
    column = index % nx
    before = block_index[np.maximum(positions - 1, 0)]
    after = block_index[np.minimum(positions + 1, block.shape[0] - 1)]
    has_left = (column > 0) & (positions > 0) & (before == index - 1)
    has_right = (column < nx - 1) & (positions < block.shape[0] - 1) & (after == index + 1)
    unchecked = slice(None) if checked is None else np.flatnonzero(checked.state[index] < 0)
    found_here = np.zeros(positions[unchecked].size, np.bool_)
    narrow = block.dtype.kind in "iu" and block.dtype.itemsize <= 2
    kernel = row_candidates_int_kernel if narrow else row_candidates_float_kernel
    kernel(block, positions[unchecked], has_left[unchecked], has_right[unchecked], FACTOR, LEVEL, found_here)
    if checked is None:
        candidate = found_here
    else:
        checked.state[index[unchecked]] = found_here
        candidate = checked.state[index] == 1
    found = 0
    if view and candidate.any():
        frames = np.array(frames)
    for p in np.flatnonzero(candidate):
        j = int(positions[p])
        neighbours = [block[j - 1]] if has_left[p] else []
        neighbours += [block[j + 1]] if has_right[p] else []
        for other in (int(index[p]) - nx, int(index[p]) + nx):
            frame = _frame(block, block_index, other, ny * nx, read_frame)
            if frame is not None:
                neighbours.append(frame)
        stack = np.ascontiguousarray(np.stack(neighbours).astype(block.dtype, copy=False))
        found += replace_spikes_cpu_kernel(block[j], stack, FACTOR, LEVEL, frames[p])
    return frames, found


def _frame(block, block_index, index, n_patterns, read_frame):
    """Frame ``index`` of the scan: from ``block`` when it holds it where consecutive frames
    would (a batch read whole), else ``read_frame``'s; None outside the scan."""
    if not 0 <= index < n_patterns:
        return None
    at = index - int(block_index[0])
    if 0 <= at < block.shape[0] and block_index[at] == index:
        return block[at]
    return read_frame(index)
