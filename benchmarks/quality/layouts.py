"""Region layouts over the scan: Voronoi grains, a planar-defect band, small inclusions."""

from __future__ import annotations

import math

import numpy as np


def voronoi_grains(scan_shape: tuple[int, int], n_grains: int, rng: np.random.Generator, min_share: float) -> np.ndarray:
    """Voronoi grains (ny, nx) int32 labelled 0..n-1, each holding >= ``min_share`` of the scan.

    Seeds are drawn at random and redrawn (up to 500 times) until every grain is big enough;
    seeds are at least half the mean grain diameter apart so none is a sliver.
    """
    ny, nx = scan_shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    spacing = 0.5 * math.sqrt(ny * nx / n_grains)
    best, best_share = None, -1.0
    for _ in range(500):
        seeds = np.column_stack([rng.uniform(0, ny, n_grains), rng.uniform(0, nx, n_grains)])
        gaps = np.linalg.norm(seeds[:, None] - seeds[None], axis=-1)[np.triu_indices(n_grains, 1)]
        if n_grains > 1 and gaps.min() < spacing:
            continue
        d2 = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
        labels = np.argmin(d2, axis=-1).astype(np.int32)
        share = np.bincount(labels.ravel(), minlength=n_grains).min() / labels.size
        if share > best_share:
            best, best_share = labels, share
        if share >= min_share:
            break
    return best


def band(labels: np.ndarray, host: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """A straight band (ny, nx) bool through the middle of region ``host``, inside it, covering
    about ``share`` of the scan: a twin lamella or stacking-fault band.

    The width is found by bisection so the band's area is the target (to one scan row).
    """
    inside = labels == host
    ys, xs = np.nonzero(inside)
    anchor = np.array([ys.mean(), xs.mean()])
    angle = rng.uniform(0, math.pi)
    normal = np.array([math.sin(angle), math.cos(angle)])
    yy, xx = np.mgrid[0 : labels.shape[0], 0 : labels.shape[1]]
    distance = np.abs((yy - anchor[0]) * normal[0] + (xx - anchor[1]) * normal[1])
    target = share * labels.size
    low, high = 0.0, float(max(labels.shape))
    for _ in range(40):
        width = 0.5 * (low + high)
        if np.count_nonzero(inside & (distance <= width / 2)) < target:
            low = width
        else:
            high = width
    return inside & (distance <= high / 2)


def inclusions(labels: np.ndarray, share: float, count: int, rng: np.random.Generator, allowed=None, margin: int = 2) -> np.ndarray:
    """``count`` round inclusions (ny, nx) bool, away from the scan edge and from each other,
    inside ``allowed`` (bool (ny, nx), default everywhere), covering about ``share`` of the scan
    together."""
    ny, nx = labels.shape
    radius = math.sqrt(share * labels.size / (count * math.pi))
    yy, xx = np.mgrid[0:ny, 0:nx]
    mask = np.zeros(labels.shape, bool)
    centres: list[tuple[float, float]] = []
    lo = radius + margin
    for _ in range(1000):
        if len(centres) == count:
            break
        c = (rng.uniform(lo, ny - lo), rng.uniform(lo, nx - lo))
        disc = (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= (radius + 1) ** 2
        if allowed is not None and not allowed[disc].all():
            continue
        if all(math.hypot(c[0] - d[0], c[1] - d[1]) > 2 * radius + 2 * margin for d in centres):
            centres.append(c)
    for cy, cx in centres:
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    return mask


def shares(labels: np.ndarray) -> np.ndarray:
    """Share of the scan held by each label 0..max."""
    return np.bincount(labels.ravel()) / labels.size
