"""Figures of clustering results, in the style of the paper gpu4d follows.

A map of clusters (one colour per label) and the centroid patterns in a grid (each grey-scale,
with its own colour bar and its label number in the label's colour), plus figures for choosing k
and for checking the beam-centre alignment.

Every ``plot_*`` function has a ``make_*_figure`` twin that builds the
:class:`matplotlib.figure.Figure` without saving it, so tests and notebooks can inspect it. Figures
are built with the object-oriented API on an Agg canvas: nothing here touches pyplot's global
state, so figures can be drawn from threads and worker processes and on machines without a
display. Files are written atomically (:func:`gpu4d.atomic.atomic_write`).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize, hsv_to_rgb, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from gpu4d.arrays import to_host
from gpu4d.atomic import atomic_write

__all__ = [
    "UNSCANNED_COLOUR",
    "save_figure",
    "png_bytes",
    "label_colours",
    "make_label_map_figure",
    "plot_label_map",
    "make_pattern_grid_figure",
    "plot_pattern_grid",
    "make_centre_map_figure",
    "plot_centre_map",
    "make_score_curves_figure",
    "plot_score_curves",
    "make_label_map_grid_figure",
    "plot_label_map_grid",
]

RGBA = tuple[float, float, float, float]
PathLike = str | os.PathLike[str]

#: Colour of scan positions not scanned yet. Lighter than tab10's grey (label 7) so they differ.
UNSCANNED_COLOUR: RGBA = (0.88, 0.88, 0.88, 1.0)
UNSCANNED_TEXT = "not scanned yet"
DPI = 150
_MAX_ASPECT = 3.0  # image panels more elongated than this are stretched (aspect="auto")

_SCORE_TITLES = {
    "inertia": ("Inertia", "lower is better; look for the elbow"),
    "silhouette": ("Silhouette", "higher is better"),
    "calinski_harabasz": ("Calinski\u2013Harabasz", "higher is better"),
    "davies_bouldin": ("Davies\u2013Bouldin", "lower is better"),
}


# --------------------------------------------------------------------------------------- colours
def label_colours(n: int) -> list[RGBA]:
    """Distinct colours for labels ``0 .. n-1``.

    Parameters
    ----------
    n : int
        Number of labels, >= 0.

    Returns
    -------
    list of (r, g, b, a) tuples
        ``tab10`` for ``n <= 10``; for ``n <= 20`` the ``tab10`` colours followed by their lighter
        ``tab20`` companions, so label ``i`` keeps its colour for every ``n <= 20``; beyond that,
        evenly spaced hues with alternating brightness so neighbouring labels differ.
    """
    if n < 0:
        raise ValueError(f"n={n} should be >= 0.")
    if n <= 10:
        return [_rgba(c) for c in colormaps["tab10"].colors[:n]]
    if n <= 20:
        tab20 = colormaps["tab20"].colors
        # tab20's even entries are tab10's colours, the odd ones their light companions.
        order = [*range(0, 20, 2), *range(1, 20, 2)]
        return [_rgba(tab20[i]) for i in order[:n]]
    index = np.arange(n)
    hsv = np.stack([index / n, np.full(n, 0.75), np.where(index % 2 == 0, 0.95, 0.65)], axis=1)
    return [_rgba(rgb) for rgb in hsv_to_rgb(hsv)]


def _rgba(colour: Any) -> RGBA:
    return tuple(float(c) for c in to_rgba(colour))  # type: ignore[return-value]


# ------------------------------------------------------------------------------------ utilities
def _new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    fig = Figure(figsize=(width, height), layout=layout, dpi=DPI)
    FigureCanvasAgg(fig)  # the Agg canvas, without going through pyplot
    return fig


def save_figure(fig: Figure, path: PathLike) -> Path:
    """Write ``fig`` to ``path`` atomically, in the format of its suffix (PNG if none)."""
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    atomic_write(path, lambda fh: fig.savefig(fh, format=fmt, dpi=DPI, **_trim(fig)))
    return path


def png_bytes(fig: Figure) -> bytes:
    """``fig`` as the PNG bytes ``save_figure`` writes (what a notebook shows)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, **_trim(fig))
    return buffer.getvalue()


def _trim(fig: Figure) -> dict:
    # A tight box trims the margin constrained layout leaves around fixed-aspect images; a
    # figure laid out by hand (no layout engine) has none and is drawn once, not twice.
    return {"bbox_inches": "tight", "pad_inches": 0.1} if fig.get_layout_engine() is not None else {}


def _grid_shape(n: int) -> tuple[int, int]:
    """(rows, columns) for ``n`` panels: near-square, wider than tall, fewest empty cells."""
    if n <= 3:
        return 1, max(n, 1)
    base = math.ceil(math.sqrt(n))
    ncols = min((base, base + 1), key=lambda c: c * math.ceil(n / c) - n)
    return math.ceil(n / ncols), ncols


def _panel_size(shape: tuple[float, ...], size: float) -> tuple[float, float]:
    """(width, height) in inches of an image panel of ``shape`` whose longer side is ``size``."""
    aspect = float(np.clip(shape[0] / max(shape[1], 1e-12), 1 / _MAX_ASPECT, _MAX_ASPECT))
    return (size / aspect, size) if aspect >= 1 else (size, size * aspect)


def _image_aspect(shape: tuple[float, ...]) -> str:
    """imshow's aspect: true proportions, unless that would draw a line scan as a sliver."""
    ratio = shape[0] / max(shape[1], 1e-12)
    return "equal" if 1 / _MAX_ASPECT <= ratio <= _MAX_ASPECT else "auto"


def _clean_image_axes(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


# ------------------------------------------------------------------------------------ label maps
def _as_labels(labels: Any, unscanned: int) -> np.ndarray:
    """Check a label map and return it as int64; NaN in a float map counts as not scanned."""
    arr = np.asarray(to_host(labels))
    if arr.ndim != 2:
        raise ValueError(f"labels should be a 2-D array (ny, nx); got shape {arr.shape}.")
    if arr.dtype.kind == "f":
        arr = np.where(np.isnan(arr), unscanned, arr)
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError("labels should hold whole numbers; found fractional or infinite ones.")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"labels should be integers; got dtype {arr.dtype}.")
    arr = arr.astype(np.int64)
    bad = (arr < 0) & (arr != unscanned)
    if bad.any():
        raise ValueError(
            f"labels should be >= 0, or {unscanned} where not scanned; found {arr[bad][0]}."
        )
    return arr


def _n_labels(labels: np.ndarray, unscanned: int, n_labels: int | None) -> int:
    scanned = labels[labels != unscanned]
    found = int(scanned.max()) + 1 if scanned.size else 0
    if n_labels is None:
        return found
    if found > n_labels:
        raise ValueError(
            f"labels go up to {found - 1}, which needs n_labels >= {found}; got {n_labels}."
        )
    return n_labels


def _label_rgba(labels: np.ndarray, colours: Sequence[RGBA], unscanned: int) -> np.ndarray:
    """(ny, nx, 4) image: each pixel its label's colour, unscanned ones grey."""
    palette = np.array([*colours, UNSCANNED_COLOUR], dtype=float)
    index = np.where(labels == unscanned, len(colours), labels)
    return palette[index]


def _legend_handles(
    labels: np.ndarray, colours: Sequence[RGBA], unscanned: int, counts: bool
) -> list[Patch]:
    total = labels.size
    n_unscanned = int(np.count_nonzero(labels == unscanned))
    sizes = np.bincount(labels[labels != unscanned], minlength=len(colours))
    handles = []
    for i, colour in enumerate(colours):
        text = f"label {i}"
        if counts:
            text += f" ({sizes[i]:,} px, {100 * sizes[i] / total:.1f}%)"
        handles.append(Patch(facecolor=colour, edgecolor="0.3", linewidth=0.5, label=text))
    if n_unscanned:
        text = UNSCANNED_TEXT
        if counts:
            text += f" ({n_unscanned:,} px, {100 * n_unscanned / total:.1f}%)"
        handles.append(
            Patch(facecolor=UNSCANNED_COLOUR, edgecolor="0.3", linewidth=0.5, label=text)
        )
    return handles


def _scan_extent(
    shape: tuple[int, int], scan_step: float | Sequence[float] | None
) -> tuple[float, float, float, float] | None:
    if scan_step is None:
        return None  # pixel indices at pixel centres
    step_y, step_x = np.broadcast_to(np.asarray(scan_step, dtype=float), (2,))
    if step_y <= 0 or step_x <= 0:
        raise ValueError(f"scan_step={scan_step} should be > 0.")
    return (0.0, shape[1] * step_x, shape[0] * step_y, 0.0)


def _scan_axis_labels(ax: Axes, calibrated: bool, scan_units: str | None) -> None:
    unit = (scan_units or "") if calibrated else "px"
    if not calibrated:  # pixel indices: no fractional ticks on a line scan
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1, steps=[1, 2, 5, 10]))
    suffix = f" ({unit})" if unit else ""
    ax.set_xlabel(f"x{suffix}")
    ax.set_ylabel(f"y{suffix}")


def make_label_map_figure(
    labels: Any,
    *,
    scan_step: float | Sequence[float] | None = None,
    scan_units: str | None = None,
    title: str | None = None,
    unscanned: int = -1,
    n_labels: int | None = None,
) -> Figure:
    """Build the map of clusters: one colour per label, with a legend of their sizes.

    Parameters
    ----------
    labels : array_like, shape (ny, nx)
        Label of each scan position, ``0 .. k-1``; ``unscanned`` (or NaN in a float array) where
        the position has not been scanned yet.
    scan_step : float or (float, float), optional
        Scan step (y, x) in ``scan_units``; the axes are in pixels if omitted.
    scan_units : str, optional
        Units of ``scan_step``, e.g. ``"nm"``.
    title : str, optional
        Defaults to ``"Map of clusters (k = K)"``.
    unscanned : int
        Value marking positions not scanned yet; they are drawn grey.
    n_labels : int, optional
        Number of clusters k, so empty labels are listed too; defaults to the largest label + 1.

    Returns
    -------
    matplotlib.figure.Figure
        Legend entries read ``"label i (N px, p%)"``, percentages of all positions, then
        ``"not scanned yet (N px, p%)"`` if any position is not scanned.
    """
    labels = _as_labels(labels, unscanned)
    k = _n_labels(labels, unscanned, n_labels)
    colours = label_colours(k)
    extent = _scan_extent(labels.shape, scan_step)
    shape = labels.shape if extent is None else (extent[2], extent[1])
    width, height = _panel_size(shape, 5.0)
    fig = _new_figure(width + 2.6, max(height + 0.8, 0.3 * (k + 1) + 0.8))
    ax = fig.add_subplot()
    ax.imshow(
        _label_rgba(labels, colours, unscanned),
        interpolation="nearest",
        extent=extent,
        aspect=_image_aspect(shape),
    )
    _scan_axis_labels(ax, extent is not None, scan_units)
    ax.set_title(title if title is not None else f"Map of clusters (k = {k})")
    # Centred, not at the top, so the title of a narrow map cannot run into it.
    fig.legend(
        handles=_legend_handles(labels, colours, unscanned, counts=True),
        loc="outside right center",
        frameon=False,
    )
    return fig


def plot_label_map(
    labels: Any,
    path: PathLike,
    *,
    scan_step: float | Sequence[float] | None = None,
    scan_units: str | None = None,
    title: str | None = None,
    unscanned: int = -1,
    n_labels: int | None = None,
) -> Path:
    """Save the map of clusters to ``path``; see :func:`make_label_map_figure`.

    Returns
    -------
    pathlib.Path
        ``path``; the format follows its suffix (PNG if none).
    """
    fig = make_label_map_figure(
        labels,
        scan_step=scan_step,
        scan_units=scan_units,
        title=title,
        unscanned=unscanned,
        n_labels=n_labels,
    )
    return save_figure(fig, path)


# -------------------------------------------------------------------------------- pattern grid
def _pattern_norm(pattern: np.ndarray, log: bool) -> Normalize:
    finite = pattern[np.isfinite(pattern)]
    if finite.size == 0:
        return Normalize(0.0, 1.0)
    vmin, vmax = float(finite.min()), float(finite.max())
    positive = finite[finite > 0]
    if log and positive.size and vmax > 0:
        # Clip to 6 decades: centroids of normalised data can hold tiny positive values.
        return LogNorm(max(float(positive.min()), vmax * 1e-6), vmax, clip=True)
    if vmax == vmin:
        vmax = vmin + 1.0
    return Normalize(vmin, vmax)


def _mark_label(ax: Axes, text: str, colour: RGBA | None) -> None:
    """Title a panel; with a colour, also frame it so it matches its region on the map."""
    ax.set_title(text, color=colour or "black", fontweight="bold")
    if colour is not None:
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(3)


def make_pattern_grid_figure(
    patterns: Any,
    *,
    title: str | None = None,
    names: Sequence[str] | None = None,
    log: bool = False,
    sizes: Sequence[int] | None = None,
    pixel_size: float | None = None,
    pixel_units: str | None = None,
) -> Figure:
    """Build the grid of centroid patterns, each grey-scale with its own colour bar.

    Parameters
    ----------
    patterns : array_like, shape (k, qy, qx)
        The k patterns, drawn left to right and top to bottom.
    title : str, optional
        Figure title.
    names : sequence of str, optional
        Panel titles, one per pattern, in black. Without it, panel ``i`` is titled ``"label i"``
        in the colour of label ``i`` on the map (:func:`label_colours`) and framed in it.
    log : bool
        Logarithmic intensity scale (values <= 0 are drawn black).
    sizes : sequence of int, optional
        Number of scan positions in each cluster; a cluster with none is said to be empty in
        its panel instead of being drawn as a blank pattern.
    pixel_size, pixel_units : float and str, optional
        The detector calibration (reciprocal-space size of one pixel, e.g. 0.18 and ``"1/nm"``);
        with it every panel gets a scale bar.

    Returns
    -------
    matplotlib.figure.Figure
    """
    patterns = np.asarray(to_host(patterns), dtype=float)
    if patterns.ndim != 3 or patterns.shape[0] == 0:
        raise ValueError(
            f"patterns should be a 3-D array (k, qy, qx) with k >= 1; got shape {patterns.shape}."
        )
    k = patterns.shape[0]
    if names is not None and len(names) != k:
        raise ValueError(f"names has {len(names)} entries; there are {k} patterns.")
    colours = label_colours(k)
    cmap = colormaps["gray"].with_extremes(bad="black", under="black")
    nrows, ncols = _grid_shape(k)
    width, height = _panel_size(patterns.shape[1:], 2.6)
    # laid out by hand, in inches: constrained layout and a tight bounding box took two thirds
    # of the drawing time, and a sweep draws two grids per k
    cell_w, cell_h, title_h = width + 0.9, height + 0.45, (0.45 if title else 0.1)
    fig_w, fig_h = ncols * cell_w + 0.1, nrows * cell_h + title_h
    fig = _new_figure(fig_w, fig_h, layout=None)
    for i in range(k):
        row, col = divmod(i, ncols)
        left = 0.1 + col * cell_w
        bottom = fig_h - title_h - (row + 1) * cell_h + 0.1
        ax = fig.add_axes((left / fig_w, bottom / fig_h, width / fig_w, height / fig_h))
        bar = fig.add_axes(
            ((left + width + 0.08) / fig_w, (bottom + 0.05 * height) / fig_h, 0.12 / fig_w, 0.9 * height / fig_h),
            label="<colorbar>",  # what matplotlib names the colour bar axes it makes itself
        )
        _clean_image_axes(ax)
        if sizes is not None and sizes[i] == 0:
            _draw_empty(ax, bar, patterns.shape[1:], width)
        else:
            norm = _pattern_norm(patterns[i], log)
            image = ax.imshow(
                patterns[i],
                cmap=cmap,
                norm=norm,
                interpolation="nearest",
                aspect=_image_aspect(patterns.shape[1:]),
            )
            colorbar = fig.colorbar(image, cax=bar)
            _limit_ticks(colorbar, 0.9 * height, log and isinstance(norm, LogNorm))
            if pixel_size:
                _scale_bar(ax, patterns.shape[1:], pixel_size, pixel_units or "", width)
        if names is None:
            _mark_label(ax, f"label {i}", colours[i])
        else:
            _mark_label(ax, names[i], None)
    if title:
        fig.suptitle(title, y=1 - 0.12 / fig_h, va="top")
    return fig


def _draw_empty(ax: Axes, bar: Axes, shape: tuple[int, ...], width_in: float) -> None:
    """An empty cluster's panel: said in words, no pattern and no colour bar."""
    ax.set_xlim(0, shape[1])
    ax.set_ylim(shape[0], 0)
    ax.set_aspect(_image_aspect(shape))
    ax.set_facecolor("0.93")
    text = "empty cluster:\nno scan position\nwas assigned to it" if width_in >= 1.5 else "empty\ncluster:\nno scan\nposition\nassigned"
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center",
            fontsize="small" if width_in >= 1.5 else "x-small", color="0.25")
    bar.set_axis_off()


def _limit_ticks(colorbar, height_in: float, log: bool) -> None:
    """At most one labelled tick per ~0.3 in of colour bar, so labels never overlap (short bars
    of wide detectors, log scales over few decades whose minor ticks get labels too)."""
    n = max(2, int(height_in / 0.3))
    if log:
        norm = colorbar.norm
        decades = math.log10(norm.vmax / norm.vmin)
        # within a decade or two, 2x and 5x ticks too, so that a bar is never left with one label
        subs = (1.0, 2.0, 5.0) if decades < 1.5 else (1.0, 3.0) if decades < 3 else (1.0,)
        colorbar.ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=n + 1))
        colorbar.ax.yaxis.set_major_formatter(FuncFormatter(_log_tick_label))
        colorbar.ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        colorbar.ax.yaxis.set_major_locator(MaxNLocator(nbins=n, min_n_ticks=2))
    colorbar.ax.tick_params(labelsize="small")


def _log_tick_label(value: float, _position=None) -> str:
    """``10^n`` for powers of ten, ``m×10^n`` beyond 0.01..10000, plain numbers between."""
    if value <= 0:
        return ""
    exponent = math.floor(math.log10(value) + 1e-9)
    mantissa = value / 10.0**exponent
    if abs(mantissa - 1) < 1e-6:
        return f"$10^{{{exponent}}}$"
    if -2 <= exponent <= 3:
        return f"{value:g}"
    return f"${mantissa:g}\\times10^{{{exponent}}}$"


def nice_length(target: float) -> float:
    """The 1, 2 or 5 x 10^n closest below ``target`` (> 0)."""
    exponent = math.floor(math.log10(target))
    for mantissa in (5.0, 2.0, 1.0):
        if mantissa * 10**exponent <= target:
            return mantissa * 10**exponent
    return 10.0**exponent


def _scale_bar(ax: Axes, shape: tuple[int, ...], pixel_size: float, units: str, width_in: float) -> None:
    """A reciprocal-space scale bar about a quarter of the panel wide (half of a narrow one),
    in its lower right, labelled above its right end."""
    length = nice_length((0.25 if width_in >= 1.5 else 0.5) * shape[1] * pixel_size)
    pixels = length / pixel_size
    y = shape[0] - 0.08 * shape[0] - 0.5
    x1 = shape[1] - 0.06 * shape[1] - 0.5
    x0 = x1 - pixels
    for colour, width in (("black", 4.5), ("white", 2.5)):
        ax.plot([x0, x1], [y, y], color=colour, linewidth=width, solid_capstyle="butt",
                scalex=False, scaley=False)
    label = f"{length:g} {units}".strip()
    ax.text(x1, y - 0.04 * shape[0], label, color="white", ha="right", va="bottom",
            fontsize="x-small", fontweight="bold",
            bbox={"facecolor": "black", "alpha": 0.5, "pad": 1.0, "linewidth": 0})


def plot_pattern_grid(
    patterns: Any,
    path: PathLike,
    *,
    title: str | None = None,
    names: Sequence[str] | None = None,
    log: bool = False,
    sizes: Sequence[int] | None = None,
    pixel_size: float | None = None,
    pixel_units: str | None = None,
) -> Path:
    """Save the grid of centroid patterns to ``path``; see :func:`make_pattern_grid_figure`.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    figure = make_pattern_grid_figure(
        patterns, title=title, names=names, log=log, sizes=sizes, pixel_size=pixel_size,
        pixel_units=pixel_units,
    )
    return save_figure(figure, path)


# ---------------------------------------------------------------------------------- centre map
def make_centre_map_figure(centres: Any, *, reference: Any = None) -> Figure:
    """Build the map of beam-centre offsets over the scan (shows descan).

    Parameters
    ----------
    centres : array_like, shape (ny, nx, 2)
        Beam centre (cy, cx) in detector pixels at each scan position; NaN where unknown.
    reference : array_like, shape (2,), optional
        The (cy, cx) offsets are measured from; defaults to the median centre.

    Returns
    -------
    matplotlib.figure.Figure
        Two panels, Δcy and Δcx, on one symmetric diverging scale with colour bars.
    """
    centres = np.asarray(to_host(centres), dtype=float)
    if centres.ndim != 3 or centres.shape[2] != 2:
        raise ValueError(f"centres should be an array (ny, nx, 2); got shape {centres.shape}.")
    known = centres.reshape(-1, 2)
    known = known[np.isfinite(known).all(axis=1)]
    if known.size == 0:
        raise ValueError("centres holds no finite (cy, cx) pair; there is nothing to plot.")
    if reference is None:
        reference = np.median(known, axis=0)
    reference = np.asarray(to_host(reference), dtype=float).reshape(2)
    offsets = centres - reference
    limit = float(np.nanmax(np.abs(offsets)))
    limit = limit if limit > 0 else 1.0
    cmap = colormaps["RdBu_r"].with_extremes(bad=UNSCANNED_COLOUR)
    width, height = _panel_size(centres.shape[:2], 3.6)
    fig = _new_figure(2 * (width + 1.0), height + 1.0)
    axes = fig.subplots(1, 2)
    for ax, j, name in zip(axes, (0, 1), ("\u0394cy (vertical)", "\u0394cx (horizontal)")):
        image = ax.imshow(
            offsets[..., j],
            cmap=cmap,
            vmin=-limit,
            vmax=limit,
            interpolation="nearest",
            aspect=_image_aspect(centres.shape[:2]),
        )
        fig.colorbar(image, ax=ax, shrink=0.9, label="offset (detector px)")
        ax.set_title(name)
        _scan_axis_labels(ax, False, None)
    fig.suptitle(f"Beam centre minus reference ({reference[0]:.2f}, {reference[1]:.2f}) px")
    return fig


def plot_centre_map(centres: Any, path: PathLike, *, reference: Any = None) -> Path:
    """Save the map of beam-centre offsets to ``path``; see :func:`make_centre_map_figure`.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    return save_figure(make_centre_map_figure(centres, reference=reference), path)


def make_confidence_map_figure(confidence: Any, *, title: str | None = None, low: float | None = None) -> Figure:
    """Build the map of each pattern's confidence in its cluster (0 unsure, 1 clear).

    ``low``: patterns below it are counted in the title, the share a user should look at.
    NaN marks a position without a pattern (a frame that never arrived): blank, not counted.
    """
    confidence = np.asarray(to_host(confidence), dtype=float)
    if confidence.ndim != 2:
        raise ValueError(f"confidence should be an array (ny, nx); got shape {confidence.shape}.")
    width, height = _panel_size(confidence.shape, 4.0)
    fig = _new_figure(width + 1.4, height + 0.9)
    ax = fig.subplots()
    image = ax.imshow(
        confidence, cmap="magma", vmin=0.0, vmax=1.0, interpolation="nearest",
        aspect=_image_aspect(confidence.shape),
    )
    fig.colorbar(image, ax=ax, shrink=0.9, label="confidence (0: boundary or mixed, 1: clear)")
    _scan_axis_labels(ax, False, None)
    text = title or "Confidence of each pattern's cluster"
    patterns = confidence[np.isfinite(confidence)]
    if low is not None and patterns.size:
        text += f"\n{(patterns < low).mean():.1%} of the patterns below {low:g}"
    ax.set_title(text)
    return fig


def plot_confidence_map(confidence: Any, path: PathLike, **options) -> Path:
    """Save the confidence map to ``path``; see :func:`make_confidence_map_figure`."""
    return save_figure(make_confidence_map_figure(confidence, **options), path)


# -------------------------------------------------------------------------------- score curves
def _score_title(name: str) -> str:
    title, hint = _SCORE_TITLES.get(name, (name.replace("_", " ").capitalize(), ""))
    return f"{title}\n({hint})" if hint else title


def make_score_curves_figure(
    ks: Sequence[int],
    scores: Mapping[str, Sequence[float]],
    *,
    suggested_k: int | None = None,
) -> Figure:
    """Build one small panel per clustering score against k.

    Parameters
    ----------
    ks : sequence of int
        The numbers of clusters tried.
    scores : mapping of str to sequence of float
        Score name (e.g. ``"inertia"``, ``"silhouette"``, ``"calinski_harabasz"``,
        ``"davies_bouldin"``; any name works) to one value per k; NaN where undefined.
    suggested_k : int, optional
        Marked with a dashed vertical line in every panel.

    Returns
    -------
    matplotlib.figure.Figure
    """
    ks = [int(k) for k in ks]
    if not scores:
        raise ValueError("scores is empty; give at least one score to plot.")
    for name, values in scores.items():
        if len(values) != len(ks):
            raise ValueError(f"scores[{name!r}] has {len(values)} values; there are {len(ks)} ks.")
    n = len(scores)
    ncols = min(n, 2) if n <= 4 else 3
    nrows = math.ceil(n / ncols)
    fig = _new_figure(ncols * 3.6, nrows * 2.9)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (name, values) in zip(axes, scores.items()):
        ax.plot(ks, np.asarray(to_host(values), dtype=float), "o-", color="tab:blue")
        ax.set_title(_score_title(name), fontsize="medium")
        ax.set_xlabel("k (number of clusters)")
        ax.set_xticks(ks if len(ks) <= 12 else ks[:: math.ceil(len(ks) / 12)])
        ax.grid(alpha=0.3)
        if suggested_k is not None:
            ax.axvline(
                suggested_k, color="tab:red", linestyle="--", label=f"suggested k = {suggested_k}"
            )
            ax.legend(fontsize="small")
    for ax in axes[n:]:
        ax.set_axis_off()
    return fig


def plot_score_curves(
    ks: Sequence[int],
    scores: Mapping[str, Sequence[float]],
    path: PathLike,
    *,
    suggested_k: int | None = None,
) -> Path:
    """Save the score curves to ``path``; see :func:`make_score_curves_figure`.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    return save_figure(make_score_curves_figure(ks, scores, suggested_k=suggested_k), path)


# --------------------------------------------------------------------------- grid of label maps
def make_label_map_grid_figure(label_maps: Mapping[int, Any], *, unscanned: int = -1) -> Figure:
    """Build a grid of maps of clusters, one per k, titled ``"k = N"``.

    Parameters
    ----------
    label_maps : mapping of int to array_like, shape (ny, nx)
        k to its label map; drawn in increasing k.
    unscanned : int
        Value marking positions not scanned yet; they are drawn grey.

    Returns
    -------
    matplotlib.figure.Figure
        With up to 20 labels a label keeps its colour across panels, and one shared legend
        names them; beyond that the colours differ per panel and there is no legend.
    """
    if not label_maps:
        raise ValueError("label_maps is empty; give at least one label map.")
    maps = {int(k): _as_labels(m, unscanned) for k, m in sorted(label_maps.items())}
    sizes = {k: max(k, _n_labels(m, unscanned, None)) for k, m in maps.items()}
    nrows, ncols = _grid_shape(len(maps))
    width, height = _panel_size(next(iter(maps.values())).shape, 2.8)
    fig = _new_figure(ncols * (width + 0.2) + 1.6, nrows * (height + 0.5))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (k, labels) in zip(axes, maps.items()):
        ax.imshow(
            _label_rgba(labels, label_colours(sizes[k]), unscanned),
            interpolation="nearest",
            aspect=_image_aspect(labels.shape),
        )
        ax.set_title(f"k = {k}")
        _clean_image_axes(ax)
    for ax in axes[len(maps):]:
        ax.set_axis_off()
    most = max(sizes.values())
    if most <= 20:
        everything = np.concatenate([m.ravel() for m in maps.values()])[None, :]
        handles = _legend_handles(everything, label_colours(most), unscanned, counts=False)
        fig.legend(handles=handles, loc="outside right upper", frameon=False)
    return fig


def plot_label_map_grid(
    label_maps: Mapping[int, Any], path: PathLike, *, unscanned: int = -1
) -> Path:
    """Save a grid of maps of clusters, one per k, to ``path``.

    See :func:`make_label_map_grid_figure`.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    return save_figure(make_label_map_grid_figure(label_maps, unscanned=unscanned), path)
