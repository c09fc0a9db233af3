"""The passes gpu4d makes over a scan; each says what a partition contributes and how it merges.

Per-pattern rows (``RowsPass``): ``Project`` (X B, or X itself), ``BeamCentres``, ``Distances``.
Sums over the patterns (``SumPass``, float64): ``TransposedProduct`` (X^T Q), ``LabelSums``
(per-label sums of the preprocessed and the raw patterns, and the squares of the preprocessed),
``ShiftedMoments`` (per-label sums of raw deviations from a reference, and of their squares).
"""

from __future__ import annotations

import numpy as np

from .base import RowsPass, SumPass


class Project(RowsPass):
    """Rows ``X @ matrix`` (n_rows, w) float32; with ``matrix`` None the rows of X themselves."""

    def __init__(self, matrix, label: str, sample=None, n_features: int | None = None):
        self.matrix = matrix
        self.label = label
        self.sample = sample
        self.width = int(matrix.shape[1]) if matrix is not None else int(n_features)

    def map(self, ctx, part):
        out = ctx.xp.empty((part.size, self.width), np.float32)
        matrix = ctx.on_device(self.matrix)
        for offset, rows in ctx.rows(part):
            block = out[offset : offset + rows.shape[0]]
            if matrix is None:
                block[...] = rows
            else:
                ctx.xp.matmul(rows, matrix, out=block)
        return out


class TransposedProduct(SumPass):
    """``X^T Q`` (m, l) float64, Q's rows in step with the rows the pass reads.

    A partition's products are summed in float32 in place (one BLAS call per chunk on the CPU,
    ``backend.add_transposed_product``) and the partitions in float64.
    """

    def __init__(self, q, label: str, sample=None):
        self.q = q
        self.label = label
        self.sample = sample

    def map(self, ctx, part):
        q = ctx.on_device(self.q)
        partial = ctx.xp.zeros((ctx.recipe.n_features, q.shape[1]), np.float32, order="F")
        for offset, rows in ctx.rows(part):
            first = part.offset + offset
            ctx.backend.add_transposed_product(partial, rows, q[first : first + rows.shape[0]])
        return (partial,)

    def finish(self, ctx, total):
        return total[0]


class LabelSums(SumPass):
    """Per-label sums over every pattern: ``(sums of preprocessed rows (width, m), sums of
    their squares per column (m,), sums of raw (aligned) patterns (width, qy * qx))``.

    ``columns`` (n, c) int32: each pattern is added to the sums of its c labels (one addition
    per value and label, ``backend.add_label_sums``). ``preprocessed`` or ``raw`` False leaves
    those sums out (None).
    """

    def __init__(self, columns, width: int, label: str, *, preprocessed: bool = True, raw: bool = True):
        self.columns = columns
        self.width = int(width)
        self.label = label
        self.preprocessed = preprocessed
        self.raw = raw

    def map(self, ctx, part):
        xp = ctx.xp
        columns = ctx.on_device(self.columns)[ctx.device_indices(part.indices)]
        sums_pre = squares = sums_raw = None
        if self.preprocessed:
            sums_pre = xp.zeros((self.width, ctx.recipe.n_features), np.float64)
            squares = xp.zeros(ctx.recipe.n_features, np.float64)
            for offset, rows in ctx.rows(part):
                ctx.backend.add_label_sums(rows, columns[offset : offset + rows.shape[0]], sums_pre, squares)
        if self.raw:
            patterns = ctx.raw_rows(part)
            sums_raw = xp.zeros((self.width, patterns.shape[1]), np.float64)
            ctx.backend.add_label_sums(patterns, columns, sums_raw)
        return (sums_pre, squares, sums_raw)

    def reduce(self, ctx, total, part_offset, partial):
        present = tuple(p for p in partial if p is not None)
        total_present = None if total is None else tuple(t for t in total if t is not None)
        merged = iter(super().reduce(ctx, total_present, part_offset, present))
        return tuple(None if p is None else next(merged) for p in partial)


class ShiftedMoments(SumPass):
    """Per-label sums of ``d = x - c[label]`` and ``d**2`` (k, qy * qx) float64 over the raw
    (aligned) patterns, ``c`` (k, qy * qx) a reference near each label's mean: the shifted data
    keep ``E[d**2] - E[d]**2`` free of the cancellation raw sums of squares suffer."""

    def __init__(self, labels, reference, label: str = "cluster statistics"):
        self.labels = np.ascontiguousarray(labels, np.intp)
        self.reference = np.ascontiguousarray(reference, np.float64)
        self.label = label

    def map(self, ctx, part):
        xp = ctx.xp
        own = ctx.on_device(self.labels)[ctx.device_indices(part.indices)]
        k = self.reference.shape[0]
        deviation = ctx.raw_rows(part).astype(np.float64) - ctx.on_device(self.reference)[own]
        one_hot = xp.zeros((part.size, k))
        one_hot[xp.arange(part.size), own] = 1.0
        return (one_hot.T @ deviation, one_hot.T @ (deviation * deviation))


class BeamCentres(RowsPass):
    """The direct beam's centre (cy, cx) in every pattern, float32 (NaN where none is found)."""

    width = 2
    label = "align"

    def __init__(self, method: str, reference, radius: float, window: float, sample=None):
        self.method = method
        self.reference = tuple(float(v) for v in reference)
        self.radius = float(radius)
        self.window = float(window)
        self.sample = sample

    def map(self, ctx, part):
        from ..align import backend_com_centres, xcorr_centres

        if self.method == "xcorr":
            return xcorr_centres(
                part.raw, centre=self.reference, radius=self.radius, window_radius=self.window, xp=ctx.xp
            )
        return backend_com_centres(ctx.backend, part.raw, centre=self.reference, window_radius=self.window)


class Distances(RowsPass):
    """Euclidean distances (n, k) of every preprocessed pattern to ``centroids`` (k, m).

    In float64: ``|x|^2 - 2 x.c + |c|^2`` cancels in float32 when x is near c.
    """

    label = "classify"
    dtype = np.float64

    def __init__(self, centroids):
        self.centroids = np.asarray(centroids, np.float64)
        self.width = int(self.centroids.shape[0])

    def map(self, ctx, part):
        xp = ctx.xp
        centroids = ctx.on_device(self.centroids)
        norms = (centroids**2).sum(axis=1)
        out = xp.empty((part.size, self.width), self.dtype)
        for offset, rows in ctx.rows(part):
            squared = ctx.backend.squared_distances(rows, centroids, norms)
            out[offset : offset + rows.shape[0]] = xp.sqrt(xp.maximum(squared, 0.0))
        return out
