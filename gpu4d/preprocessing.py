"""Batch passes over a scan: the mean pattern, the feature matrix, the per-cluster mean patterns.

Each pass reads the scan batch by batch through the backend (so the GPU streams batches to the
device) and runs the fused preprocessing kernel. The feature matrix is the only whole-dataset
array: (n_patterns, n_kept_pixels) float32, on the backend's device.
"""

from __future__ import annotations

import math

import numpy as np

from .dataset import Dataset
from .errors import InputError
from .kernels import pixel_math
from .progress import batch_bar

TRANSFORMS = {
    "none": pixel_math.TRANSFORM_NONE,
    "sqrt": pixel_math.TRANSFORM_SQRT,
    "log1p": pixel_math.TRANSFORM_LOG1P,
}
NORMALIZATIONS = {
    "none": pixel_math.NORM_NONE,
    "max": pixel_math.NORM_MAX,
    "l2": pixel_math.NORM_L2,
    "sum": pixel_math.NORM_SUM,
}

#: Host memory a CPU batch may take as float32 work space.
CPU_BATCH_BYTES = 64 * 2**20
#: On the CPU, the sketch passes run the kernel on chunks of about this many float32 bytes,
#: so the matrix products read the rows from cache (L3), not from memory. Chunks of 4-32 MB
#: timed alike on the seed-sized scan; much smaller ones pay per-call thread wake-ups.
CPU_CHUNK_BYTES = 8 * 2**20
#: Patterns averaged to find the beam for the mask (evenly spaced scan rows).
MEAN_PATTERN_SAMPLE = 4096


def option_code(table: dict[str, int], value, argument: str) -> int:
    """The kernel code of an option name, or an InputError naming the argument."""
    if not isinstance(value, str) or value.lower() not in table:
        raise InputError(f"{argument} must be one of {', '.join(table)}; got {value!r}")
    return table[value.lower()]


def resolve_batch_size(batch_size, dataset: Dataset, backend, n_features: int) -> int:
    """The batch size in patterns: the user's, or one that fits the backend's memory."""
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        return int(min(batch_size, dataset.n_patterns))
    pattern_bytes = 4 * math.prod(dataset.detector_shape)
    budget = CPU_BATCH_BYTES
    free = backend.free_memory_bytes()
    if free is not None:
        # the feature matrix is allocated first; batches take a slice of what is left
        left = free - 4 * dataset.n_patterns * n_features
        budget = max(pattern_bytes, min(4 * CPU_BATCH_BYTES, left // 8))
    size = max(1, budget // pattern_bytes)
    nx = dataset.scan_shape[1]
    if size >= nx:
        size -= size % nx  # whole scan rows read fastest
    return int(min(size, dataset.n_patterns))


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


def cache_sized_chunks(backend, device_batches, n_features: int):
    """Split ``(start, batch)`` pairs into cache-sized chunks on the CPU; the GPU keeps them."""
    if backend.name != "cpu":
        yield from device_batches
        return
    rows = max(8, CPU_CHUNK_BYTES // (4 * max(1, n_features)))
    for start, batch in device_batches:
        for offset in range(0, batch.shape[0], rows):
            yield start + offset, batch[offset : offset + rows]


def checked_batches(dataset: Dataset, batch_size: int):
    """The dataset's batches, checked for non-finite values, its ``zeroed_pixels`` read as 0.

    Why zero them and not only mask them: alignment samples every pattern at shifted
    positions, so a hot pixel left in the raw pattern would land beside its masked position,
    somewhere else in every pattern, and be clustered as a feature of the descan.
    """
    zeroed = None if dataset.zeroed_pixels is None else np.nonzero(dataset.zeroed_pixels)
    for start, batch in dataset.batches(batch_size):
        check_finite(batch, dataset, start)
        if zeroed is not None and zeroed[0].size:
            batch = np.array(batch)  # a copy: the input is never written
            batch[:, zeroed[0], zeroed[1]] = 0
        yield start, batch


def mean_pattern(dataset: Dataset, max_patterns: int = MEAN_PATTERN_SAMPLE) -> np.ndarray:
    """Mean pattern (qy, qx) float64 over evenly spaced scan rows (about ``max_patterns``)."""
    ny, nx = dataset.scan_shape
    n_rows = min(ny, max(1, max_patterns // nx))
    rows = np.unique(np.linspace(0, ny - 1, n_rows).round().astype(int))
    total = np.zeros(dataset.detector_shape, np.float64)
    for row in rows:
        patterns = dataset.read_patterns(row * nx, (row + 1) * nx)
        check_finite(patterns, dataset, row * nx)
        total += patterns.sum(axis=0, dtype=np.float64)
    return total / (len(rows) * nx)


def build_features(
    dataset: Dataset, backend, pixels, transform: int, norm: int, shifts, batch_size: int, progress=False
):
    """Preprocess every pattern into the feature matrix (n_patterns, n_kept) float32 on the device.

    ``pixels`` is (pixel_y, pixel_x) of the kept pixels; ``shifts`` (n, 2) float32 or None.
    """
    xp = backend.xp
    pixel_y, pixel_x = (backend.to_device(p) for p in pixels)
    shifts_dev = None if shifts is None else backend.to_device(shifts)
    features = xp.empty((dataset.n_patterns, pixel_y.shape[0]), np.float32)
    with batch_bar(progress, dataset.n_patterns, "preprocess") as bar:
        for start, batch in backend.device_batches(checked_batches(dataset, batch_size)):
            stop = start + batch.shape[0]
            batch_shifts = None if shifts_dev is None else shifts_dev[start:stop]
            backend.preprocess(batch, batch_shifts, pixel_y, pixel_x, transform, norm, features[start:stop])
            bar.update(batch.shape[0])
    backend.synchronize()
    return features


def cluster_mean_patterns(
    dataset: Dataset, backend, labels: np.ndarray, n_clusters: int, shifts, batch_size: int, progress=False
) -> tuple[np.ndarray, np.ndarray]:
    """Mean raw pattern of each cluster (aligned if ``shifts`` is given), and cluster sizes.

    Returns (k, qy, qx) float32 means (zeros for an empty cluster) and (k,) int64 counts.
    """
    xp = backend.xp
    qy, qx = dataset.detector_shape
    all_y, all_x = np.indices((qy, qx), dtype=np.int32)
    pixel_y, pixel_x = backend.to_device(all_y.ravel()), backend.to_device(all_x.ravel())
    shifts_dev = None if shifts is None else backend.to_device(shifts)
    labels_dev = backend.to_device(labels.astype(np.int32))
    cluster_ids = xp.arange(n_clusters, dtype=np.int32)
    sums = xp.zeros((n_clusters, qy * qx), np.float64)
    work = xp.empty((batch_size, qy * qx), np.float32)
    with batch_bar(progress, dataset.n_patterns, "cluster means") as bar:
        for start, batch in backend.device_batches(checked_batches(dataset, batch_size)):
            stop = start + batch.shape[0]
            patterns = work[: batch.shape[0]]
            batch_shifts = None if shifts_dev is None else shifts_dev[start:stop]
            backend.preprocess(
                batch, batch_shifts, pixel_y, pixel_x,
                pixel_math.TRANSFORM_NONE, pixel_math.NORM_NONE, patterns,
            )
            one_hot = (labels_dev[start:stop, None] == cluster_ids[None, :]).astype(np.float32)
            sums += one_hot.T @ patterns
            bar.update(batch.shape[0])
    counts = np.bincount(labels, minlength=n_clusters).astype(np.int64)
    sums = backend.to_host(sums)
    means = np.divide(sums, counts[:, None], out=np.zeros_like(sums), where=counts[:, None] > 0)
    return means.reshape(n_clusters, qy, qx).astype(np.float32), counts
