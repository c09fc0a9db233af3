"""How results show themselves in Jupyter: their figures, a summary table and HyperSpy's explorer.

The figures are the ones the result files hold (``labels.png``, ``scores.png``, ...), built by
``gpu4d.figures`` and returned, not saved. ``explore`` gives HyperSpy's linked view of the label
map and each position's cluster pattern, from a lazy signal: the (ny, nx, qy, qx) cube of mean
patterns is never built, each view reads one pattern of the k.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

#: Figures of a sweep, named after their files in a sweep folder.
SWEEP_FIGURES = ("scores", "label_maps")
#: Bytes of mean patterns one chunk of the lazy explore signal holds at most.
EXPLORE_CHUNK_BYTES = 64 * 2**20


# ------------------------------------------------------------------------------------ figures
def result_figure_names(result) -> list[str]:
    """The figures of ``result``, named after their files: ``labels``, ``centroids``,
    ``mean_patterns``, and ``confidence`` and ``centres`` when the result has them."""
    names = ["labels", "centroids", "mean_patterns"]
    if result.confidence is not None:
        names.append("confidence")
    if result.centres is not None:
        names.append("centres")
    return names


def notebook_figure(fig):
    """``fig`` with a PNG display of its own: gpu4d builds figures without pyplot, and IPython
    registers its inline display of figures only once pyplot is imported (until then a
    notebook would show ``Figure(640x480)``). Not in pyplot's list, it is shown once."""
    from .figures import png_bytes

    fig._repr_png_ = lambda: png_bytes(fig)
    return fig


def result_figure(result, kind: str = "labels"):
    """The matplotlib Figure ``kind`` of ``result`` (see ``result_figure_names``), as its PNG
    file draws it, displayable in notebooks (``notebook_figure``)."""
    _check_kind(kind, result_figure_names(result))
    return notebook_figure(_build_result_figure(result, kind))


def _build_result_figure(result, kind: str):
    from .figures import (
        make_centre_map_figure,
        make_confidence_map_figure,
        make_label_map_figure,
        make_pattern_grid_figure,
    )
    from .result import LOW_CONFIDENCE

    if kind == "labels":
        y_axis, x_axis = result.scan_axes
        calibrated = y_axis.units != "px"
        return make_label_map_figure(
            result.labels,
            scan_step=(y_axis.scale, x_axis.scale) if calibrated else None,
            scan_units=y_axis.units if calibrated else None,
            title=f"{Path(result.source).name}: k = {result.n_clusters}",
            n_labels=result.n_clusters,
        )
    if kind in ("centroids", "mean_patterns"):
        q_axis = result.detector_axes[1]
        grid = {"sizes": result.cluster_sizes}
        if q_axis.units != "px":  # a calibrated detector: scale bars on the patterns
            grid.update(pixel_size=q_axis.scale, pixel_units=q_axis.units)
        if kind == "centroids":
            return make_pattern_grid_figure(result.centroids, title="Cluster centroids (preprocessed)", **grid)
        return make_pattern_grid_figure(result.mean_patterns, title="Mean pattern of each cluster", log=True, **grid)
    if kind == "confidence":
        return make_confidence_map_figure(result.confidence_map(), low=LOW_CONFIDENCE)
    reference = result.extra.get("alignment", {}).get("reference")
    return make_centre_map_figure(result.centres, reference=np.asarray(reference) if reference else None)


def sweep_figure(sweep, kind: str = "scores"):
    """The matplotlib Figure ``kind`` of a ``SweepResult``: ``"scores"`` (the score curves, the
    suggested k marked) or ``"label_maps"`` (the map of every k), as ``scores.png`` and
    ``label_maps.png`` draw them, displayable in notebooks."""
    from .figures import make_label_map_grid_figure, make_score_curves_figure

    _check_kind(kind, SWEEP_FIGURES)
    if kind == "scores":
        return notebook_figure(make_score_curves_figure(sweep.ks, sweep.scores, suggested_k=sweep.suggested_k))
    return notebook_figure(make_label_map_grid_figure(sweep.labels))


def _check_kind(kind, names) -> None:
    if kind not in names:
        raise ValueError(f"kind={kind!r} should be one of {', '.join(map(repr, names))}.")


# ------------------------------------------------------------------------------- HTML tables
def result_html(result) -> str:
    """A short HTML summary of a ``ClusterResult``: k, shapes, backend, inertia, and the size
    of every cluster."""
    rows = [
        ("source", result.source),
        ("clusters k", str(result.n_clusters)),
        ("scan (ny, nx)", _shape_text(result.scan_axes)),
        ("detector (qy, qx)", _shape_text(result.detector_axes)),
        ("inertia", f"{result.inertia:.6g}"),
        ("backend", result.backend),
    ]
    share = result.low_confidence_share()
    if share is not None:
        from .result import LOW_CONFIDENCE

        rows.append((f"confidence < {LOW_CONFIDENCE:g}", f"{share:.1%} of the patterns"))
    if "model" in result.extra:
        rows.append(("classified with", str(result.extra["model"])))
    total = max(1, int(np.sum(result.cluster_sizes)))
    clusters = [
        (str(i), f"{int(n)}", f"{int(n) / total:.1%}") for i, n in enumerate(result.cluster_sizes)
    ]
    return (
        "<div><b>gpu4d ClusterResult</b>"
        + _table(None, rows)
        + _table(("label", "patterns", "share"), clusters)
        + "</div>"
    )


def sweep_html(sweep) -> str:
    """A short HTML summary of a ``SweepResult``: shapes, the suggested k and why, and the
    scores and cluster sizes of every k."""
    first = sweep.results[sweep.ks[0]]
    reason = sweep.suggestion.get("reason", "") if isinstance(sweep.suggestion, dict) else ""
    rows = [
        ("source", first.source),
        ("scan (ny, nx)", _shape_text(first.scan_axes)),
        ("detector (qy, qx)", _shape_text(first.detector_axes)),
        ("ks", ", ".join(str(k) for k in sweep.ks)),
        ("suggested k", f"{sweep.suggested_k}" + (f" ({reason})" if reason else "")),
        ("backend", first.backend),
    ]
    names = list(sweep.scores)
    per_k = [
        (
            str(k) + (" (suggested)" if k == sweep.suggested_k else ""),
            *(f"{sweep.scores[name][i]:.4g}" for name in names),
            " ".join(str(int(n)) for n in sweep.results[k].cluster_sizes),
        )
        for i, k in enumerate(sweep.ks)
    ]
    return (
        "<div><b>gpu4d SweepResult</b>"
        + _table(None, rows)
        + _table(("k", *names, "cluster sizes"), per_k)
        + "</div>"
    )


def _shape_text(axes) -> str:
    """``"32 x 48 (step 2.5 nm)"``; pixel axes give only the shape."""
    shape = " x ".join(str(a.size) for a in axes)
    if axes[0].units == "px":
        return shape
    return f"{shape} (step {axes[0].scale:.4g} {axes[0].units})"


def _table(header, rows) -> str:
    cells = []
    if header is not None:
        cells.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for row in rows:
        tag = ["th"] + ["td"] * (len(row) - 1) if header is None else ["td"] * len(row)
        cells.append("<tr>" + "".join(f"<{t}>{html.escape(str(c))}</{t}>" for t, c in zip(tag, row)) + "</tr>")
    return "<table>" + "".join(cells) + "</table>"


# ------------------------------------------------------------------------------------ explore
def mean_pattern_signal(result):
    """A lazy HyperSpy Signal2D (nx, ny | qx, qy): at every scan position the mean pattern of
    its cluster, on the result's scan and detector calibrations. Only the k patterns and the
    label map are held; a chunk of the cube is made when it is read."""
    import dask.array as da
    import hyperspy.api as hs

    from .result import calibrate_axes

    ny, nx = result.labels.shape
    qy, qx = result.mean_patterns.shape[1:]
    rows = int(max(1, min(ny, EXPLORE_CHUNK_BYTES // max(1, nx * qy * qx * 4))))
    labels = da.from_array(np.asarray(result.labels, np.intp), chunks=(rows, nx))
    patterns = np.asarray(result.mean_patterns, np.float32)
    cube = labels.map_blocks(
        _patterns_of, patterns, dtype=np.float32, new_axis=[2, 3],
        chunks=(labels.chunks[0], labels.chunks[1], (qy,), (qx,)),
    )
    signal = hs.signals.Signal2D(cube).as_lazy()
    calibrate_axes(signal.axes_manager.navigation_axes, result.scan_axes)
    calibrate_axes(signal.axes_manager.signal_axes, result.detector_axes)
    signal.metadata.General.title = "gpu4d: mean pattern of each position's cluster"
    return signal


def _patterns_of(labels: np.ndarray, patterns: np.ndarray) -> np.ndarray:
    return patterns[labels]


def explore(result, **plot_options):
    """Open HyperSpy's interactive view: the label map as navigator, the mean pattern of the
    cluster under the cursor as signal. ``plot_options`` go to HyperSpy's ``Signal2D.plot``
    (e.g. ``norm="log"``). Returns the lazy signal shown (see ``mean_pattern_signal``)."""
    from matplotlib.colors import ListedColormap

    from .figures import label_colours

    signal = mean_pattern_signal(result)
    navigator = result.to_signals()["labels"]
    k = result.n_clusters
    options = {
        "navigator": navigator,
        "navigator_kwds": {"cmap": ListedColormap(label_colours(k)), "vmin": -0.5, "vmax": k - 0.5},
        **plot_options,
    }
    signal.plot(**options)
    return signal
