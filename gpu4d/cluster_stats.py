"""Per-cluster statistics of the raw patterns (mean, per-pixel standard deviation, count) and
the one datacube that holds them, for orientation or strain mapping of each cluster downstream.

The standard deviation needs a pass over the scan: per cluster, the sums of ``x - c`` and of
``(x - c)**2`` in float64, with ``c`` a reference pattern near the cluster's mean (the result's
mean pattern): shifting by it keeps ``E[d**2] - E[d]**2`` free of the cancellation that the
raw sums of squares suffer (Chan, Golub and LeVeque's shifted data).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, OutputError
from .backend import get_backend
from .engine import InlineExecutor, RowRecipe, read_checked
from .engine.passes import ShiftedMoments

#: float64 work space one batch may take.
BATCH_BYTES = 64 * 2**20
#: The statistics along the cube's "statistic" axis, in order.
STATISTICS = ("mean", "std")
SUFFIXES = (".hspy", ".zspy")


@dataclass
class ClusterStatistics:
    """Statistics of the raw patterns of each cluster (aligned ones when shifts were given).

    Attributes
    ----------
    mean : (k, qy, qx) float64
    std : (k, qy, qx) float64
        Per-pixel population standard deviation (``ddof=0``, numpy's default); 0 for a
        cluster of one pattern, and mean and std are 0 for an empty cluster.
    count : (k,) int64
        Patterns in each cluster.
    """

    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray


def cluster_statistics(
    dataset, labels, n_clusters: int, *, batch_size: int | None = None, shifts=None, reference=None
) -> ClusterStatistics:
    """Mean, standard deviation and count of the patterns of each cluster, in one pass.

    Parameters
    ----------
    dataset : gpu4d.Dataset
        Read by the engine's pass (its ``zeroed_pixels`` read as 0).
    labels : (ny, nx) or (n,) ints in ``0 .. n_clusters - 1``, in scan order.
    batch_size : patterns per batch; by default about 64 MiB of float64.
    shifts : (n, 2) float32, optional
        Descan shifts: each pattern is shifted (bilinear, the preprocessing kernel's) first.
    reference : (k, qy, qx), optional
        Patterns close to the clusters' means (e.g. ``ClusterResult.mean_patterns``), used only
        for precision (see the module's docstring); by default each cluster's first pattern.
    """
    labels = np.asarray(labels).ravel()
    if labels.size != dataset.n_patterns:
        raise InputError(
            f"labels: {labels.size} labels for the {dataset.n_patterns} patterns of {dataset.source}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= n_clusters):
        raise InputError(f"labels: values should be in 0..{n_clusters - 1}; found {labels.min()}..{labels.max()}")
    labels = labels.astype(np.intp)
    qy, qx = dataset.detector_shape
    pixels = qy * qx
    if batch_size is None:
        batch_size = max(1, BATCH_BYTES // (8 * pixels))
    if reference is None:
        centre = _first_patterns(dataset, labels, n_clusters)
    else:
        centre = np.asarray(reference, np.float64).reshape(n_clusters, pixels)
    shifts = None if shifts is None else np.ascontiguousarray(shifts, np.float32)
    executor = InlineExecutor(dataset, get_backend("cpu"), batch_size)
    sums, squares = executor.run(ShiftedMoments(labels, centre), RowRecipe.raw(shifts))
    count = np.bincount(labels, minlength=n_clusters).astype(np.int64)
    per = np.maximum(count, 1)[:, None]
    mean_deviation = sums / per
    variance = np.maximum(squares / per - mean_deviation**2, 0.0)  # rounding can dip below 0
    empty = count == 0
    mean = np.where(empty[:, None], 0.0, centre + mean_deviation)
    shape = (n_clusters, qy, qx)
    return ClusterStatistics(mean.reshape(shape), np.sqrt(variance).reshape(shape), count)


def _first_patterns(dataset, labels, n_clusters: int) -> np.ndarray:
    """Each cluster's first pattern (raw, unshifted: any member is within the cluster's spread
    of its mean, which is all the reference needs), zeros for an empty cluster."""
    present, first = np.unique(labels, return_index=True)
    centre = np.zeros((n_clusters, int(np.prod(dataset.detector_shape))))
    for cluster, index in zip(present, first):
        centre[cluster] = read_checked(dataset, int(index), int(index) + 1).reshape(-1)
    return centre


# ------------------------------------------------------------------------ of a ClusterResult
def result_statistics(result, data, *, batch_size=None, reader=None, scan_shape=None) -> ClusterStatistics:
    """The statistics of ``result``'s clusters over ``data``, the scan it labels: read as the
    result read it (its dead and hot pixels as 0, its descan shifts when it was aligned), so
    that ``mean`` is ``result.mean_patterns`` in float64 (its detector offset subtracted too)."""
    from .model import model_aligned, open_for_model

    dataset = open_for_model(result, data, reader=reader, scan_shape=scan_shape, own_scan=True)
    if dataset.scan_shape != tuple(result.labels.shape):
        raise InputError(
            f"{dataset.source}: scan shape {dataset.scan_shape} is not the result's "
            f"{tuple(result.labels.shape)}; give the scan the result was made from"
        )
    shifts = _result_shifts(result) if model_aligned(result) else None
    return cluster_statistics(
        dataset, result.labels, result.n_clusters, batch_size=batch_size, shifts=shifts,
        reference=result.mean_patterns,
    )


def _result_shifts(result) -> np.ndarray:
    """The shifts the result's patterns were moved by: its descan fit, redone from its measured
    centres towards its reference beam (``gpu4d.align.descan_shifts`` is deterministic)."""
    from .align import DEFAULT_ALIGN_METHOD, descan_shifts

    method = result.parameters.get("align")
    method = DEFAULT_ALIGN_METHOD if method in ("auto", True) else method
    reference = result.extra["alignment"]["reference"]
    shifts, _ = descan_shifts(result.centres, method, tuple(reference))
    return shifts


def statistics_signal(stats: ClusterStatistics, detector_axes, *, title: str = "gpu4d cluster statistics"):
    """One HyperSpy Signal2D (statistic, cluster | qx, qy) float32: ``.inav[0]`` the mean
    patterns, ``.inav[1]`` their standard deviations, ``.inav[:, i]`` both of cluster i; the
    detector calibration on the signal axes and the counts in ``metadata.gpu4d.count``."""
    import hyperspy.api as hs

    from .result import calibrate_axes

    cube = np.stack([stats.mean, stats.std], axis=1).astype(np.float32)  # (k, 2, qy, qx)
    signal = hs.signals.Signal2D(cube)
    calibrate_axes(signal.axes_manager.signal_axes, detector_axes)
    statistic, cluster = signal.axes_manager.navigation_axes
    statistic.name, statistic.units = "statistic (0 mean, 1 std)", ""
    cluster.name, cluster.units = "cluster", ""
    signal.metadata.General.title = title
    signal.metadata.set_item("gpu4d.statistics", list(STATISTICS))
    signal.metadata.set_item("gpu4d.count", [int(c) for c in stats.count])
    signal.metadata.set_item("gpu4d.std", "per-pixel population standard deviation (ddof=0) of the raw patterns")
    return signal


def save_signal(signal, path, *, overwrite: bool = False, inputs=()) -> Path:
    """Write ``signal`` to ``path`` (``.hspy`` or ``.zspy``), moved into place when complete.
    An existing ``path`` is replaced only with ``overwrite``; an input file never is."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise OutputError(f"{path}: the file should end in .hspy or .zspy")
    for source in inputs:
        if Path(source).exists() and path.resolve() == Path(source).resolve():
            raise OutputError(f"{path}: is the scan being read; choose another file")
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: exists; pass overwrite=True to replace it")
    if not path.parent.is_dir():
        raise OutputError(f"{path}: the folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        signal.save(str(tmp), overwrite=True)
        if path.is_dir():  # a .zspy store is a folder: os.replace cannot replace a full one
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
    return path
