"""Dead and hot detector pixels, found in the mean, minimum and maximum patterns of a sample of
the scan.

A hot pixel (a noisy or stuck counter) is bright in nearly every frame while its neighbours are
not; left in, it becomes the "direct beam" ``mask="auto"`` centres on, and with ``normalize="max"``
it sets the scale of every pattern. A dead pixel reads zero in every frame. Both are excluded from
clustering (``gpu4d.masks``) before the beam is looked for.

The rules are chosen so that diffraction never counts as a defect:

* hot: the pixel stands far above all 8 of its neighbours in the mean pattern (its excess over
  the pattern's median is more than ``HOT_RATIO`` times each neighbour's and more than
  ``HOT_RATIO`` robust standard deviations of the mean pattern), AND it is such an isolated
  single bright pixel in nearly every sampled frame (``HOT_FRAME_FRACTION``). The direct beam
  and Bragg discs span several pixels, so their brightest pixel has neighbours of comparable
  intensity; a spot that is a single pixel in the mean but not in the frames (a weak spot of
  scattered counts, or the spot of a region covering part of the scan) fails the frame test.
* dead: zero in every sampled frame (its minimum and maximum both 0) while its neighbours
  (their median) have a mean high enough that all-zero by chance is improbable (expected
  counts over the sample >= ``DEAD_MIN_EXPECTED``, probability < 1e-8 for Poisson counts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .engine import check_finite

HOT_RATIO = 10.0
#: A candidate is hot when it is isolated in at least this fraction of the frames checked
#: (nearly all: a single-pixel spot of a region that covers part of the scan is diffraction).
HOT_FRAME_FRACTION = 0.9
#: Frames read again to check the candidates (only when there are candidates).
HOT_CHECK_FRAMES = 256
#: Candidates checked frame by frame at most (beyond this the detector is not one hot pixel
#: among good ones, and the pixels are left in).
MAX_CANDIDATES = 4096
DEAD_MIN_EXPECTED = 20.0
#: Bad pixels listed by position in the summary (all are counted).
MAX_LISTED = 20

_RING = np.ones((3, 3), bool)
_RING[1, 1] = False


#: Patterns averaged to find the beam for the mask (evenly spaced scan rows).
MEAN_PATTERN_SAMPLE = 4096


@dataclass
class PatternStatistics:
    """Per-pixel statistics (qy, qx) of the sampled patterns: mean (float64), smallest and
    largest value (the patterns' dtype)."""

    mean: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    n_patterns: int
    rows: np.ndarray  # the scan rows sampled


@dataclass(frozen=True)
class BadPixels:
    """Hot and dead pixels: ``masked`` (qy, qx) bool and what was found, for the summary."""

    hot: np.ndarray  # (n, 2) int (y, x)
    dead: np.ndarray  # (n, 2) int (y, x)
    from_detector: np.ndarray  # (n, 2) int: flagged by the file's own pixel mask
    shape: tuple[int, int]

    @property
    def masked(self) -> np.ndarray:
        masked = np.zeros(self.shape, bool)
        for pixels in (self.hot, self.dead, self.from_detector):
            masked[pixels[:, 0], pixels[:, 1]] = True
        return masked

    @property
    def count(self) -> int:
        return int(self.masked.sum())

    def describe(self) -> dict:
        info = {}
        for name in ("hot", "dead", "from_detector"):
            pixels = getattr(self, name)
            info[f"n_{name}"] = int(len(pixels))
            info[name] = [[int(y), int(x)] for y, x in pixels[:MAX_LISTED]]
        info["rule"] = (
            f"hot: > {HOT_RATIO:g}x every neighbour in the mean pattern and isolated in >= "
            f"{HOT_FRAME_FRACTION:.0%} of the frames checked; dead: 0 in every sampled frame "
            "while its neighbours are not"
        )
        return info

    def text(self) -> str:
        """One phrase for the CLI, e.g. ``"2 hot pixels (y=88, x=52), (y=21, x=111)"``."""
        parts = []
        kinds = (("hot", self.hot), ("dead", self.dead), ("flagged by the file", self.from_detector))
        for name, pixels in kinds:
            if len(pixels):
                where = ", ".join(f"(y={y}, x={x})" for y, x in pixels[:3])
                more = ", ..." if len(pixels) > 3 else ""
                plural = "s" if len(pixels) > 1 else ""
                parts.append(f"{len(pixels)} {name} pixel{plural} {where}{more}")
        return "; ".join(parts)


def pattern_statistics(dataset, max_patterns: int = MEAN_PATTERN_SAMPLE) -> PatternStatistics:
    """Mean, minimum and maximum over evenly spaced scan rows (about ``max_patterns``
    patterns), the rows ``gpu4d.preprocessing.mean_pattern`` averages."""
    ny, nx = dataset.scan_shape
    n_rows = min(ny, max(1, max_patterns // nx))
    rows = np.unique(np.linspace(0, ny - 1, n_rows).round().astype(int))
    total = np.zeros(dataset.detector_shape, np.float64)
    minimum = maximum = None
    for row in rows:
        patterns = dataset.read_patterns(row * nx, (row + 1) * nx)
        check_finite(patterns, dataset, row * nx)
        total += patterns.sum(axis=0, dtype=np.float64)
        # min and max reduce in the data's own type (SIMD): a float64 copy for squares cost 3x
        low, high = patterns.min(axis=0), patterns.max(axis=0)
        minimum = low if minimum is None else np.minimum(minimum, low)
        maximum = high if maximum is None else np.maximum(maximum, high)
    return PatternStatistics(total / (len(rows) * nx), minimum, maximum, len(rows) * nx, rows)


def find_bad_pixels(dataset, stats: PatternStatistics, detector_bad=None) -> BadPixels:
    """The hot and dead pixels of ``dataset`` (see the module notes); ``detector_bad`` is the
    file's own bad-pixel mask (True = bad), if it has one."""
    shape = dataset.detector_shape
    empty = np.zeros((0, 2), int)
    flagged = np.argwhere(detector_bad) if detector_bad is not None else empty
    if min(shape) < 3:  # no 3x3 neighbourhood to compare with
        return BadPixels(empty, empty, flagged, shape)
    hot = _hot_pixels(dataset, stats)
    dead = _dead_pixels(stats)
    return BadPixels(hot, dead, flagged, shape)


def clean_mean(mean: np.ndarray, bad: BadPixels | None) -> np.ndarray:
    """The mean pattern with bad pixels replaced by the median of their neighbours, for the
    beam search."""
    if bad is None or bad.count == 0:
        return mean
    masked = bad.masked
    filled = ndimage.median_filter(mean, footprint=_RING, mode="mirror")
    return np.where(masked, filled, mean)


def _neighbour_max(image: np.ndarray) -> np.ndarray:
    return ndimage.maximum_filter(image, footprint=_RING, mode="mirror")


def _hot_pixels(dataset, stats: PatternStatistics) -> np.ndarray:
    excess = stats.mean - np.median(stats.mean)
    spread = 1.4826 * np.median(np.abs(excess - np.median(excess)))  # robust sigma of the mean
    neighbours = np.maximum(_neighbour_max(excess), 0.0)
    candidates = np.argwhere((excess > HOT_RATIO * neighbours) & (excess > HOT_RATIO * spread) & (excess > 0))
    if len(candidates) == 0 or len(candidates) > MAX_CANDIDATES:
        return np.zeros((0, 2), int)
    isolated = np.zeros(len(candidates), np.int64)
    checked = 0
    ys, xs = candidates[:, 0], candidates[:, 1]
    for patterns in _check_frames(dataset, stats.rows):
        frames = patterns.astype(np.float64)
        values = frames[:, ys, xs]
        around = np.full_like(values, -np.inf)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy or dx:
                    ny_ = _mirror(ys + dy, frames.shape[1])
                    nx_ = _mirror(xs + dx, frames.shape[2])
                    around = np.maximum(around, frames[:, ny_, nx_])
        base = np.median(frames.reshape(len(frames), -1), axis=1)[:, None]  # per frame
        above = values - base
        isolated += ((above > 0) & (above > HOT_RATIO * np.maximum(around - base, 0.0))).sum(axis=0)
        checked += len(frames)
    return candidates[isolated >= HOT_FRAME_FRACTION * checked]


def _mirror(index: np.ndarray, size: int) -> np.ndarray:
    """Indices reflected into 0..size-1 like ndimage's "mirror" mode."""
    index = np.where(index < 0, -index, index)
    return np.where(index >= size, 2 * (size - 1) - index, index)


def _check_frames(dataset, rows: np.ndarray):
    """Batches of up to HOT_CHECK_FRAMES frames from the sampled rows, evenly spread."""
    nx = dataset.scan_shape[1]
    n_rows = max(1, min(len(rows), HOT_CHECK_FRAMES // nx))
    for row in rows[np.unique(np.linspace(0, len(rows) - 1, n_rows).round().astype(int))]:
        patterns = dataset.read_patterns(row * nx, (row + 1) * nx)
        yield patterns[: max(1, HOT_CHECK_FRAMES // n_rows)]


def _dead_pixels(stats: PatternStatistics) -> np.ndarray:
    zero = (stats.minimum == 0) & (stats.maximum == 0)
    if not zero.any():
        return np.zeros((0, 2), int)
    # the neighbours (their median: a dead column has live ones on either side) must be bright
    # enough that 0 in every frame is not chance
    typical = ndimage.median_filter(stats.mean, footprint=_RING, mode="mirror")
    expected = typical * stats.n_patterns
    return np.argwhere(zero & (expected >= DEAD_MIN_EXPECTED))
