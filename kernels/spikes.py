"""Finding and replacing transient spikes (cosmic rays, X-ray hits) in raw patterns on the host.

A host kernel only, with no CUDA twin, like ``kernels.offset``: spikes are taken out as the
batches are read (``gpu4d.engine.reading``), before any device sees them. The rule is
``gpu4d.spikes``'s; this module runs it fast. Every frame read is first checked against its two
neighbours in the scan row in one sweep (``row_candidates_*``); only the rare frame with a
candidate goes through ``replace_spikes_cpu_kernel`` with all its neighbours.

Why two versions of the first sweep: it runs on every frame once per run, so it must compile to
SIMD code, and numba vectorizes the integer maximum and sums of the integer version (3.7-3.9 ms
for 516 uint8 or uint16 patterns of 144x144 here) but not their float twins (60 ms written the
same way). Float data and wider integers take ``row_candidates_float_kernel``, which counts in
float32 (7 ms).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(inline="always", cache=True)
def _in_row(flat, j, left, right):
    """Frame ``j`` of ``flat`` and the two frames it is compared with: those beside it, a
    missing one stood in for by the other (max(a, a) = a)."""
    first = flat[j - 1] if left else flat[j + 1]
    second = flat[j + 1] if right else flat[j - 1]
    return flat[j], first, second


@numba.njit(inline="always", cache=True, fastmath=True)
def _mean_positive(frame):
    """The mean of the positive values of ``frame`` (flat), 0 if it has none (``fastmath``: the
    sum compiles to SIMD code; its order does not matter here)."""
    total = 0.0
    positive = 0
    for i in range(frame.size):
        value = frame[i]
        total += np.float64(value) if value > 0 else 0.0
        positive += 1 if value > 0 else 0
    return total / positive if positive else 0.0


@numba.njit(cache=True)
def row_candidates_int_kernel(block, positions, has_left, has_right, factor, level, candidate):
    """``candidate[p]``: whether a pixel of the frame ``block[positions[p]]`` (integers of at most
    16 bits) reads more than ``factor`` (a small integer) times the larger of its values in the
    frames beside it in ``block`` (the one before if ``has_left[p]``, the one after if
    ``has_right[p]``) plus ``level`` times the mean of the frame's positive values. Frames with
    neither neighbour, or no positive value, are not. ``block`` C-contiguous. Exact: each pixel
    in int32 (8 lanes of SIMD code: 30% faster than int64 for uint8, 40% for uint16), the sums
    in int64."""
    flat = block.reshape(block.shape[0], -1)
    factor = np.int32(factor)
    for p in range(positions.size):
        candidate[p] = False
        if not (has_left[p] or has_right[p]):
            continue
        frame, first, second = _in_row(flat, positions[p], has_left[p], has_right[p])
        total = np.int64(0)
        positive = 0
        excess = np.int32(-(1 << 30))
        for i in range(frame.size):
            value = np.int32(frame[i])
            total += np.int64(value) if value > 0 else np.int64(0)
            positive += 1 if value > 0 else 0
            excess = max(excess, np.int32(value - factor * max(np.int32(first[i]), np.int32(second[i]), np.int32(0))))
        candidate[p] = positive > 0 and excess > level * total / positive


@numba.njit(cache=True, fastmath=True)
def row_candidates_float_kernel(block, positions, has_left, has_right, factor, level, candidate):
    """``row_candidates_int_kernel`` for float frames and integers of more than 16 bits: the
    margin first, then a count of the pixels above it, in float32 (a 32-bit count above 2**24
    is rounded, which moves a threshold, not a frame's values)."""
    flat = block.reshape(block.shape[0], -1)
    factor = np.float32(factor)
    for p in range(positions.size):
        candidate[p] = False
        if not (has_left[p] or has_right[p]):
            continue
        frame, first, second = _in_row(flat, positions[p], has_left[p], has_right[p])
        mean = _mean_positive(frame)
        if mean == 0.0:
            continue
        margin = np.float32(level * mean)
        found = 0
        for i in range(frame.size):
            ref = max(np.float32(first[i]), np.float32(second[i]), np.float32(0.0))
            found += 1 if np.float32(frame[i]) - factor * ref > margin else 0
        candidate[p] = found > 0


@numba.njit(cache=True)
def replace_spikes_cpu_kernel(frame, neighbours, factor, level, out):
    """Replace in ``out`` (a copy of ``frame``, (qy, qx)) every pixel above ``factor`` times the
    largest value of ``neighbours`` (m, qy, qx; floored at 0) within one pixel of it plus
    ``level`` times the mean of the frame's positive values, by the largest value of
    ``neighbours`` at that pixel; returns how many. float64: exact for integer frames, as the first sweep is (whose same-pixel reference
    is never above this one, so its candidates include every pixel replaced here)."""
    qy, qx = frame.shape
    mean = _mean_positive(frame.reshape(-1))
    if mean == 0.0:
        return 0
    margin = level * mean
    found = 0
    for y in range(qy):
        for x in range(qx):
            value = np.float64(frame[y, x])
            if value <= margin:
                continue
            near = 0.0
            same = 0.0
            for m in range(neighbours.shape[0]):
                same = max(same, np.float64(neighbours[m, y, x]))
                for v in range(max(y - 1, 0), min(y + 2, qy)):
                    for u in range(max(x - 1, 0), min(x + 2, qx)):
                        near = max(near, np.float64(neighbours[m, v, u]))
            if value - factor * near > margin:
                out[y, x] = same
                found += 1
    return found
