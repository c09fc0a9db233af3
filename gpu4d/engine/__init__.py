"""The streaming engine: every pass over a scan is a map over its partitions and an ordered merge.

::

    scan ──partitions (fixed row ranges)──▶ read + check ──▶ preprocess (fused kernel, per chunk)
        ──▶ Pass.map ──▶ partial (per partition) ──▶ Pass.reduce, in partition order (float64)
        ──▶ Pass.finish ──▶ result

A *pass* (``passes.py``) says what one partition contributes (rows of a projection, a product
summed over the patterns, per-label sums, beam centres, distances to centroids) and how the
partials merge. An *executor* runs it: ``InlineExecutor`` in this process, on the CPU or the GPU
(the backend streams partitions to the device, double-buffered), or ``DaskExecutor`` on a
dask.distributed cluster (each worker opens the file itself). The partials are merged in
partition order whatever order they finish in, so for one partitioning the result is the same
on every executor; other partitionings agree to float32 rounding.
"""

from .base import Part, Partition, Pass, RowsPass, SumPass, plan_partitions
from .context import Context, RowRecipe
from .inline import InlineExecutor, parse_memory_budget, raw_cache_budget
from .reading import check_finite, read_checked

__all__ = [
    "Context",
    "InlineExecutor",
    "Part",
    "Partition",
    "Pass",
    "RowRecipe",
    "RowsPass",
    "SumPass",
    "check_finite",
    "plan_partitions",
    "parse_memory_budget",
    "raw_cache_budget",
    "read_checked",
]
