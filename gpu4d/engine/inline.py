"""The inline executor: every partition in this process, in order, on the CPU or the GPU."""

from __future__ import annotations

import math
import os
import re

import numpy as np

from ..errors import InputError
from ..progress import batch_bar
from .base import Part, plan_partitions, rows_in_partition
from .context import ContextCache
from ..spikes import CheckedFrames
from .reading import read_checked, read_part

#: Raw patterns an executor may keep in host memory between passes (bytes); see ``RawCache``.
RAW_CACHE_BYTES = 1 << 30


def raw_cache_budget(memory_budget: int | None = None) -> int:
    """Bytes of raw patterns an executor may keep in memory: ``memory_budget`` when the user
    gave one (``parse_memory_budget``), else ``RAW_CACHE_BYTES``, at most a quarter of the
    memory available now."""
    if memory_budget is not None:
        return int(memory_budget)
    budget = RAW_CACHE_BYTES
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        budget = min(budget, available // 4)
    except (ValueError, OSError, AttributeError):  # not on every platform
        pass
    return int(budget)


_SIZE = re.compile(r"^\s*([0-9.]+(?:e[+-]?[0-9]+)?)\s*([kmgt]?)(?:ib?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_memory_budget(value, name: str = "memory_budget") -> int | None:
    """``None``, a number of bytes, or text such as ``"8G"``, ``"512M"``, ``"1.5GB"``, ``"2GiB"``
    (powers of 1024) -> bytes (None: the default budget). An InputError names a bad value."""
    if value is None:
        return None
    number = math.nan
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            pass
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        try:
            number = float(match.group(1)) * _UNITS[match.group(2).upper()]
        except (ValueError, OverflowError):
            pass
    if not (math.isfinite(number) and number >= 0):
        raise InputError(
            f"{name}={value!r} should be a number of bytes >= 0 or a size such as 8G, 512M, 1.5GB"
        )
    return int(number)


class RawCache:
    """The scan's checked raw patterns, kept after the first pass that reads them all when
    they fit in ``budget`` bytes (in their own dtype: uint8 takes a quarter of float32) and the
    dataset does not read cheaply anyway; later passes then read memory, not the file."""

    def __init__(self, dataset, budget: int):
        self.dataset = dataset
        raw_bytes = dataset.n_patterns * math.prod(dataset.detector_shape) * dataset.dtype.itemsize
        self.keep = raw_bytes <= budget and not dataset.reads_cheaply
        self._kept = None  # the whole scan, once every partition has been read
        self._filling = None
        self._filled = 0
        self.checked = CheckedFrames(dataset.n_patterns)  # frames checked for spikes this run

    @property
    def filling(self) -> bool:
        """True while a pass that reads every partition in order would complete the cache."""
        return self.keep and self._kept is None

    def read(self, partition, indices) -> np.ndarray:
        """The patterns of ``partition`` at ``indices`` (``rows_in_partition``)."""
        if self._kept is not None:
            return self._kept[indices]
        if not self.filling:
            return read_part(self.dataset, partition, indices, self.checked)
        batch = self._fill(partition)
        return batch if isinstance(indices, slice) else batch[indices - partition.start]

    def _fill(self, partition) -> np.ndarray:
        batch = read_checked(self.dataset, partition.start, partition.stop, checked=self.checked)
        if partition.start == 0:
            # one allocation for the whole cache (huge pages where the OS gives them): storing
            # 47 separate batches page-faulted 645 MB of fresh memory in 1.8 s against 0.4 s
            self._filling = np.empty((self.dataset.n_patterns, *self.dataset.detector_shape), self.dataset.dtype)
            self._filled = 0
        if self._filling is not None and partition.start == self._filled:
            self._filling[partition.start : partition.stop] = batch
            batch = self._filling[partition.start : partition.stop]
            self._filled = partition.stop
            if self._filled == self.dataset.n_patterns:
                self._kept, self._filling = self._filling, None
        return batch


class InlineExecutor:
    """Runs passes in this process: partitions read in order, streamed to the backend's device
    (double-buffered on a GPU, see ``gpu4d.backend.device``), mapped and merged one after the other."""

    name = "inline"
    local = True  # the passes' arrays stay in this process (exact mode's matrix can be read)

    def __init__(self, dataset, backend, partition_size: int, *, cache_budget: int = 0):
        self.dataset = dataset
        self.backend = backend
        self.partitions = plan_partitions(dataset.n_patterns, partition_size)
        self.partition_size = int(partition_size)
        self.cache_budget = int(cache_budget)  # bytes of raw patterns it may keep (RawCache)
        self._cache = RawCache(dataset, cache_budget)
        self.context = ContextCache(backend)  # context(recipe): one Context per recipe

    @property
    def raw_kept(self) -> bool:
        """Whether the raw patterns were kept in memory between passes."""
        return bool(self._cache.keep)

    def describe(self) -> dict:
        return {"executor": self.name, "partitions": len(self.partitions), "partition_size": self.partition_size}

    def run(self, pass_, recipe=None, progress: bool = False):
        """Run ``pass_`` over the scan and return its result."""
        ctx = self.context(recipe)
        n_rows = pass_.n_rows(self.dataset.n_patterns)
        total = pass_.start(ctx, n_rows)
        with batch_bar(progress, n_rows, pass_.label) as bar:
            for part, raw in self.backend.device_batches(self._host_parts(pass_.sample)):
                part.raw = raw
                total = pass_.reduce(ctx, total, part.offset, pass_.map(ctx, part))
                bar.update(part.size)
        self.backend.synchronize()
        ctx.end_pass()
        return pass_.finish(ctx, total)

    def _host_parts(self, sample):
        """``(Part, host raw patterns)`` for each partition holding rows the pass reads."""
        for partition in self.partitions:
            indices, offset = rows_in_partition(partition, sample)
            if not isinstance(indices, slice) and indices.size == 0:
                if self._cache.filling:
                    self._cache.read(partition, indices)  # the cache fills in order
                continue
            yield Part(partition, None, indices, offset), self._cache.read(partition, indices)
