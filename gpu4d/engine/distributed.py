"""The Dask executor: one task per partition on a dask.distributed cluster, merged in order.

Each worker opens the scan itself from a small picklable description (``DatasetSource``:
path, reader, scan shape, the pixels read as 0), never an array or a memory map, reads its
partition, runs the pass's ``map`` with its own backend and returns only the partial. The
client merges the partials in partition order (``Pass.reduce``), whatever order they finish
in, so the result equals the inline executor's over the same partitions. A worker that dies
has its tasks run again elsewhere by Dask; the partials are the same wherever they run.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..progress import batch_bar
from .base import Part, count, plan_partitions, rows_in_partition
from .context import ContextCache
from ..spikes import CheckedFrames
from .reading import read_part


@dataclass(frozen=True, eq=False)
class DatasetSource:
    """How a worker opens the client's scan: the file, its reader and scan shape, the shape
    the client read, the detector pixels every pass reads as 0, the offset it subtracts and
    whether it replaces spikes."""

    path: str
    reader: str | None
    scan_shape: tuple | None
    shape: tuple
    zeroed_pixels: object = None
    offset: float = 0.0
    spikes: bool = True

    @classmethod
    def of(cls, dataset) -> "DatasetSource":
        if dataset.reopen is None:
            raise InputError(
                f"scheduler: the scan ({dataset.source}) is in memory; Dask workers open the file "
                "themselves, so give its file path (or leave the scheduler out)"
            )
        path, reader, scan_shape = dataset.reopen
        return cls(path, reader, scan_shape, tuple(dataset.shape), dataset.zeroed_pixels, float(dataset.offset), bool(dataset.spikes))

    def key(self) -> tuple:
        zeroed = None if self.zeroed_pixels is None else np.packbits(self.zeroed_pixels).tobytes()
        return (self.path, self.reader, self.scan_shape, self.shape, zeroed, self.offset, self.spikes)

    def open(self):
        from ..io.dataset import open_dataset

        dataset = open_dataset(self.path, reader=self.reader, scan_shape=self.scan_shape)
        if tuple(dataset.shape) != self.shape:
            raise InputError(
                f"{self.path}: reads as shape {tuple(dataset.shape)} here but {self.shape} on the client; "
                "is it the same file?"
            )
        return dataclasses.replace(dataset, zeroed_pixels=self.zeroed_pixels, offset=self.offset, spikes=self.spikes)


# per worker process: the scans it has opened (with the frames of each it has checked for
# spikes, gpu4d.spikes) and its contexts per backend (kept across tasks, so a file is opened,
# a frame checked and the kernels' device copies made once per worker)
_DATASETS: dict = {}
_CONTEXTS: dict = {}


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "local"


def _opened(source: DatasetSource, address: str):
    """``(dataset, CheckedFrames)`` of the client's scan in this worker."""
    key = source.key()
    if key not in _DATASETS:
        try:
            dataset = source.open()
        except (InputError, OSError) as exc:
            raise InputError(f"Dask worker {address}: {exc}") from None
        if len(_DATASETS) >= 4:
            _DATASETS.clear()
        _DATASETS[key] = dataset, CheckedFrames(dataset.n_patterns)
    return _DATASETS[key]


def _context(backend_name: str, recipe):
    from ..backend import get_backend

    if backend_name not in _CONTEXTS:
        _CONTEXTS[backend_name] = ContextCache(get_backend(backend_name, warn=False))
    return _CONTEXTS[backend_name](recipe)


def _together(pass_, recipe):
    return pass_, recipe


def map_partition(source: DatasetSource, shared, partition, backend_name: str):
    """A worker's task: ``(partition index, offset, partial on the host, worker, patterns read)``."""
    pass_, recipe = shared
    address = _worker_address()
    indices, offset = rows_in_partition(partition, pass_.sample)
    n = count(indices)
    if n == 0:
        return partition.index, offset, None, address, 0
    dataset, checked = _opened(source, address)
    raw = read_part(dataset, partition, indices, checked)
    ctx = _context(backend_name, recipe)
    partial = pass_.map(ctx, Part(partition, ctx.backend.to_device(raw), indices, offset))
    if isinstance(partial, tuple):
        partial = tuple(None if p is None else ctx.backend.to_host(p) for p in partial)
    else:
        partial = ctx.backend.to_host(partial)
    return partition.index, offset, partial, address, n


class DaskExecutor:
    """Runs passes on a dask.distributed cluster; the client merges the partials in order.

    ``backend`` is the client's (it merges and finishes the passes); ``worker_backend`` names
    the backend each worker maps with (``"gpu"`` on dask-cuda workers).
    """

    name = "dask"
    raw_kept = False
    cache_budget = None  # workers re-read their partitions; nothing is kept between passes
    local = False

    def __init__(self, client, dataset, backend, partition_size: int, *, worker_backend: str = "cpu", address=None):
        self.client = client
        self.dataset = dataset
        self.backend = backend
        self.source = DatasetSource.of(dataset)
        self.partitions = plan_partitions(dataset.n_patterns, partition_size)
        self.partition_size = int(partition_size)
        self.worker_backend = worker_backend
        self.address = address or client.scheduler.address
        self.patterns_per_worker: Counter = Counter()
        self.context = ContextCache(backend)  # context(recipe): one Context per recipe

    def describe(self) -> dict:
        return {
            "executor": self.name,
            "scheduler": self.address,
            "workers": len(self.patterns_per_worker),
            "patterns_per_worker": dict(sorted(self.patterns_per_worker.items())),
            "worker_backend": self.worker_backend,
            "partitions": len(self.partitions),
            "partition_size": self.partition_size,
        }

    def run(self, pass_, recipe=None, progress: bool = False):
        from distributed import as_completed

        ctx = self.context(recipe)
        n_rows = pass_.n_rows(self.dataset.n_patterns)
        total = pass_.start(ctx, n_rows)
        # the pass and the recipe go to the cluster once, not with each task, as a task that
        # returns them: Dask recomputes a task whose result died with its worker, where
        # scattered data would be lost with its holders ("lost dependencies")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ll]arge object.*")
            shared = self.client.submit(_together, pass_, recipe, pure=False)
        futures = [
            self.client.submit(map_partition, self.source, shared, partition, self.worker_backend, pure=False)
            for partition in self.partitions
        ]
        waiting, next_index = {}, 0
        with batch_bar(progress, n_rows, pass_.label) as bar:
            for future in as_completed(futures, loop=self.client.loop):
                index, offset, partial, address, n = future.result()
                future.release()
                self.patterns_per_worker[address] += n
                waiting[index] = (offset, partial)
                while next_index in waiting:  # merged in partition order, never as finished
                    offset, partial = waiting.pop(next_index)
                    if partial is not None:
                        total = pass_.reduce(ctx, total, offset, partial)
                    next_index += 1
                bar.update(n)
        del shared
        ctx.end_pass()
        return pass_.finish(ctx, total)
