"""Partitions of a scan, the part of a partition a pass reads, and the pass protocol."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Partition:
    """Patterns ``start:stop`` (scan order) of a scan: the unit of work of every executor."""

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def plan_partitions(n_patterns: int, size: int) -> list[Partition]:
    """The scan cut into consecutive partitions of ``size`` patterns (the last may be shorter)."""
    size = max(1, int(size))
    return [
        Partition(i, start, min(start + size, n_patterns))
        for i, start in enumerate(range(0, n_patterns, size))
    ]


def rows_in_partition(partition: Partition, sample) -> tuple[object, int]:
    """The patterns of ``partition`` a pass reads: ``(indices, offset)``.

    ``indices`` is ``slice(start, stop)`` when the pass reads every pattern (``sample`` None),
    else the sorted scan indices of the sample's patterns in the partition (an int64 array,
    maybe empty); ``offset`` is the position of the first of them in the pass's own rows (the
    scan position, or the position in the sample).
    """
    if sample is None:
        return slice(partition.start, partition.stop), partition.start
    first, last = np.searchsorted(sample, [partition.start, partition.stop])
    return np.asarray(sample[first:last], np.int64), int(first)


def count(indices) -> int:
    return indices.stop - indices.start if isinstance(indices, slice) else int(indices.size)


@dataclass
class Part:
    """What ``Pass.map`` gets: the raw patterns a pass reads in one partition.

    ``raw`` (b, qy, qx) is on the backend's device; ``indices`` are their scan positions
    (``slice`` or int64 array, see ``rows_in_partition``); ``offset`` is the position of the
    first in the pass's rows.
    """

    partition: Partition
    raw: object
    indices: object
    offset: int

    @property
    def size(self) -> int:
        return count(self.indices)


class Pass:
    """One pass over a scan: ``map`` per partition, ``reduce`` in partition order, ``finish``.

    Subclasses set ``label`` (the progress text) and ``sample`` (sorted scan indices the pass
    reads; None for all). ``map`` must depend only on its part (it runs on any worker); the
    arrays a pass holds are host or device arrays, moved by ``ctx.on_device``.
    """

    label = ""
    sample = None

    def n_rows(self, n_patterns: int) -> int:
        return n_patterns if self.sample is None else int(len(self.sample))

    def start(self, ctx, n_rows: int):
        return None

    def map(self, ctx, part: Part):
        raise NotImplementedError

    def reduce(self, ctx, total, part_offset: int, partial):
        raise NotImplementedError

    def finish(self, ctx, total):
        return total


class RowsPass(Pass):
    """A pass that gives one row of ``width`` values per pattern read: ``(n_rows, width)``."""

    width = 1
    dtype = np.float32

    def start(self, ctx, n_rows: int):
        return ctx.xp.empty((n_rows, self.width), self.dtype)

    def reduce(self, ctx, total, part_offset: int, partial):
        partial = ctx.backend.to_device(partial)  # a no-op inline
        total[part_offset : part_offset + partial.shape[0]] = partial
        return total


class SumPass(Pass):
    """A pass whose partials are tuples of arrays summed over the partitions in float64."""

    def reduce(self, ctx, total, part_offset: int, partial):
        partial = tuple(ctx.backend.to_device(p) for p in partial)  # a no-op inline
        if total is None:  # float64 copies (a float64 partial is the map's own: no copy)
            return tuple(p.astype(np.float64, copy=False) for p in partial)
        for t, p in zip(total, partial):
            t += p  # cast element by element, no float64 temporary
        return total
