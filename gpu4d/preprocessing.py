"""The preprocessing options, the batch size, and the passes of the exact path: the mean
pattern, the feature matrix, the per-cluster mean patterns.

The passes run on the engine (``gpu4d.engine``). The feature matrix is the only whole-dataset
array: (n_patterns, n_kept_pixels) float32, on the backend's device (exact mode only).
"""

from __future__ import annotations

import math

import numpy as np

from .bad_pixels import MEAN_PATTERN_SAMPLE, pattern_statistics
from .io.dataset import Dataset
from .engine import InlineExecutor, RowRecipe
from .engine.passes import LabelSums, Project
from .errors import InputError
from .kernels import pixel_math

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


def mean_pattern(dataset: Dataset, max_patterns: int = MEAN_PATTERN_SAMPLE) -> np.ndarray:
    """Mean pattern (qy, qx) float64 over evenly spaced scan rows (about ``max_patterns``), as
    the passes read them: the mean of ``bad_pixels.pattern_statistics`` (which reads those rows
    once), the dataset's offset subtracted from it (as ``gpu4d.masks.detector_mask_for`` does)
    and its zeroed pixels 0 (a hot pixel must not pull a beam search)."""
    mean = pattern_statistics(dataset, max_patterns).mean
    if dataset.offset:
        mean = np.maximum(mean - dataset.offset, 0.0)
    if dataset.zeroed_pixels is not None:
        mean[dataset.zeroed_pixels] = 0
    return mean


def build_features(
    dataset: Dataset, backend, pixels, transform: int, norm: int, shifts, batch_size: int, progress=False,
    blur: float = 0.0,
):
    """Preprocess every pattern into the feature matrix (n_patterns, n_kept) float32 on the device.

    ``pixels`` is (pixel_y, pixel_x) of the kept pixels; ``shifts`` (n, 2) float32 or None;
    ``blur`` the detector blur's sigma in px (``gpu4d.blur``).
    """
    recipe = RowRecipe(pixels[0], pixels[1], transform, norm, shifts, blur=blur)
    features = Project(None, "preprocess", n_features=recipe.n_features)
    return InlineExecutor(dataset, backend, batch_size).run(features, recipe, progress)


def cluster_mean_patterns(
    dataset: Dataset, backend, labels: np.ndarray, n_clusters: int, shifts, batch_size: int, progress=False,
    executor=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean raw pattern of each cluster (aligned if ``shifts`` is given), and cluster sizes.

    Returns (k, qy, qx) float32 means (zeros for an empty cluster) and (k,) int64 counts.
    """
    qy, qx = dataset.detector_shape
    executor = executor or InlineExecutor(dataset, backend, batch_size)
    columns = np.ascontiguousarray(labels.reshape(-1, 1), np.int32)
    sums_pass = LabelSums(columns, n_clusters, "cluster means", preprocessed=False)
    _, _, sums = executor.run(sums_pass, RowRecipe.raw(shifts), progress)
    sums = backend.to_host(sums)
    counts = np.bincount(labels, minlength=n_clusters).astype(np.int64)
    means = np.divide(sums, counts[:, None], out=np.zeros_like(sums), where=counts[:, None] > 0)
    return means.reshape(n_clusters, qy, qx).astype(np.float32), counts
