"""Choosing the executor of a run's passes: in this process, or on a Dask scheduler.

``scheduler`` (the API argument, the CLI's ``--scheduler``) or the ``DASK_SCHEDULER_ADDRESS``
environment variable (as Dask's own tools read it) sends the passes to a dask.distributed
cluster; without either the passes run inline.
"""

from __future__ import annotations

import contextlib
import os

from .engine import InlineExecutor
from .errors import InputError

#: The environment variable Dask's tools read the scheduler address from.
SCHEDULER_VARIABLE = "DASK_SCHEDULER_ADDRESS"
#: Seconds to wait for the scheduler to answer, and for its first worker.
CONNECT_TIMEOUT_S = 10


def requested_scheduler(scheduler=None):
    """The scheduler asked for: the argument, else ``DASK_SCHEDULER_ADDRESS``, else None."""
    if scheduler is None:
        scheduler = os.environ.get(SCHEDULER_VARIABLE) or None
    if scheduler is not None and not isinstance(scheduler, str) and not _is_client(scheduler):
        raise InputError(
            f"scheduler={scheduler!r} should be an address such as 'tcp://host:8786' or a "
            "distributed.Client"
        )
    if isinstance(scheduler, str) and not scheduler.strip():
        raise InputError("scheduler: the address is empty")
    return scheduler


@contextlib.contextmanager
def make_executor(dataset, backend, partition_size: int, *, scheduler=None, cache_budget: int = 0, backend_name="cpu"):
    """The executor of a run's passes, closed (its client, if it made one) when the run ends.

    Inline: ``backend`` maps and merges, the raw patterns kept between passes when they fit in
    ``cache_budget`` bytes. Dask: workers map with ``backend_name``; the client (``backend``)
    merges.
    """
    scheduler = requested_scheduler(scheduler)
    if scheduler is None:
        yield InlineExecutor(dataset, backend, partition_size, cache_budget=cache_budget)
        return
    from .engine.distributed import DaskExecutor, DatasetSource

    DatasetSource.of(dataset)  # a scan in memory cannot go to workers: say so before connecting
    with _client(scheduler) as (client, address):
        yield DaskExecutor(client, dataset, backend, partition_size, worker_backend=backend_name, address=address)


@contextlib.contextmanager
def _client(scheduler):
    if _is_client(scheduler):
        yield scheduler, scheduler.scheduler.address
        return
    try:
        from distributed import Client
    except ImportError as exc:
        raise InputError(
            f"scheduler={scheduler!r}: dask.distributed is not installed (pip install 'gpu4d[dask]')"
        ) from exc
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(
            f"cannot reach the Dask scheduler at {scheduler} ({type(exc).__name__}: {exc}); start one "
            "with 'dask scheduler' and workers with 'dask worker ADDRESS', or leave --scheduler out"
        ) from None
    try:
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise InputError(
                f"the Dask scheduler at {scheduler} has no workers (waited {CONNECT_TIMEOUT_S} s); "
                "start some with 'dask worker ADDRESS'"
            ) from exc
        yield client, scheduler
    finally:
        client.close()


def _is_client(obj) -> bool:
    return type(obj).__name__ == "Client" and hasattr(obj, "submit") and hasattr(obj, "scheduler")
