"""Results in Jupyter (gpu4d.views): ``plot()`` returns the figures the PNG files are drawn from,
``_repr_html_`` tables hold the result's numbers, ``explore()`` opens HyperSpy's linked view of
the label map and each position's cluster pattern."""

from __future__ import annotations

from html.parser import HTMLParser

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported (HyperSpy's plots use pyplot)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib import pyplot  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.image import imread  # noqa: E402

import gpu4d  # noqa: E402
from gpu4d.figures import label_colours  # noqa: E402
from gpu4d.synthetic import make_scan  # noqa: E402

SCAN_STEP_NM = 2.5
Q_SCALE = 0.05  # 1/nm per detector pixel


@pytest.fixture(scope="module")
def scan():
    return make_scan((20, 24), (32, 32), n_grains=3, defect=False, seed=1)


@pytest.fixture(scope="module")
def signal(scan):
    """The scan as a calibrated HyperSpy signal (nx, ny | qx, qy)."""
    import hyperspy.api as hs

    s = hs.signals.Signal2D(scan.data)
    for axis in s.axes_manager.navigation_axes:
        axis.scale, axis.units = SCAN_STEP_NM, "nm"
    for axis in s.axes_manager.signal_axes:
        axis.scale, axis.offset, axis.units = Q_SCALE, -16 * Q_SCALE, "1/nm"
    return s


@pytest.fixture(scope="module")
def result(signal):
    return gpu4d.cluster(signal, 3)


@pytest.fixture(scope="module")
def swept(scan):
    return gpu4d.sweep(scan.data, [2, 3, 4])


@pytest.fixture(autouse=True)
def close_figures():
    yield
    pyplot.close("all")


def _image_axes(fig):
    return [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]


# ------------------------------------------------------------------------------------ plot()
def test_plot_labels_is_the_label_map_in_the_label_colours_on_the_scan_calibration(result):
    fig = result.plot()
    (ax,) = _image_axes(fig)
    rgba = np.asarray(ax.images[0].get_array())
    colours = label_colours(3)
    for label in range(3):
        assert np.allclose(rgba[result.labels == label], colours[label])
    ny, nx = result.labels.shape
    left, right, bottom, top = ax.images[0].get_extent()
    assert (right - left, bottom - top) == pytest.approx((nx * SCAN_STEP_NM, ny * SCAN_STEP_NM))
    assert "nm" in ax.get_xlabel() and ax.get_title().endswith("k = 3")


@pytest.mark.parametrize("kind", ["centroids", "mean_patterns"])
def test_plot_patterns_draws_each_cluster_pattern(result, kind):
    fig = result.plot(kind)
    axes = _image_axes(fig)
    assert len(axes) == 3
    for i, ax in enumerate(axes):
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), getattr(result, kind)[i], rtol=1e-6)


def test_plot_confidence_and_unknown_kinds(result):
    (ax,) = _image_axes(result.plot("confidence"))
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), result.confidence, rtol=1e-6)
    with pytest.raises(ValueError, match=r"kind='centres' should be one of 'labels', 'centroids'"):
        result.plot("centres")  # not aligned: no centres to draw


def test_saved_pngs_are_the_plotted_figures(result, tmp_path):
    from gpu4d.figures import save_figure

    result.save(tmp_path / "out")
    for kind in ("labels", "mean_patterns", "confidence"):
        save_figure(result.plot(kind), tmp_path / f"{kind}.png")
        np.testing.assert_array_equal(imread(tmp_path / f"{kind}.png"), imread(tmp_path / "out" / f"{kind}.png"))


def test_a_notebook_shows_the_plotted_figures_as_the_png_files(result, swept, tmp_path):
    # IPython's inline display of figures is registered only once pyplot is imported; gpu4d's
    # figures bring their own, so a cell ending in result.plot() shows the image either way
    import io

    from IPython.core.formatters import DisplayFormatter

    result.save(tmp_path / "out")
    swept.save(tmp_path / "sweep")
    for figure, saved in ((result.plot(), "out/labels.png"), (swept.plot(), "sweep/scores.png")):
        shown, _ = DisplayFormatter().format(figure)
        assert shown["image/png"][:8] == b"\x89PNG\r\n\x1a\n"
        np.testing.assert_array_equal(imread(io.BytesIO(shown["image/png"])), imread(tmp_path / saved))


def test_sweep_plot_scores_and_label_maps(swept):
    fig = swept.plot()
    assert len([ax for ax in fig.axes if ax.lines]) == len(swept.scores)
    for ax, (name, values) in zip(fig.axes, swept.scores.items()):
        curve = ax.lines[0]
        np.testing.assert_array_equal(curve.get_xdata(), swept.ks)
        np.testing.assert_allclose(curve.get_ydata(), values, err_msg=name)
        marked = [line.get_xdata()[0] for line in ax.lines[1:]]
        assert marked == [swept.suggested_k]
    maps = swept.plot("label_maps")
    axes = _image_axes(maps)
    assert [ax.get_title() for ax in axes] == [f"k = {k}" for k in swept.ks]
    for ax, k in zip(axes, swept.ks):
        rgba = np.asarray(ax.images[0].get_array())
        labels = swept.results[k].labels
        for label in range(k):
            assert np.allclose(rgba[labels == label], label_colours(max(swept.ks))[label])
    with pytest.raises(ValueError, match="kind='inertia'"):
        swept.plot("inertia")


# ---------------------------------------------------------------------------- _repr_html_
class _Tables(HTMLParser):
    """The text of every table cell, table by table, row by row."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self._cell = [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def test_result_html_holds_k_shapes_sizes_inertia_and_backend(result):
    summary, clusters = _Tables(result._repr_html_()).tables
    rows = dict(summary)
    assert rows["source"] == "<HyperSpy Signal2D>"
    assert rows["clusters k"] == "3"
    assert rows["scan (ny, nx)"] == "20 x 24 (step 2.5 nm)"
    assert rows["detector (qy, qx)"] == "32 x 32 (step 0.05 1/nm)"
    assert float(rows["inertia"]) == pytest.approx(result.inertia, rel=1e-5)
    assert rows["backend"] == "cpu"
    assert clusters[0] == ["label", "patterns", "share"]
    sizes = np.bincount(result.labels.ravel(), minlength=3)
    assert [int(row[1]) for row in clusters[1:]] == sizes.tolist()
    assert [row[2] for row in clusters[1:]] == [f"{s / sizes.sum():.1%}" for s in sizes]


def test_sweep_html_holds_every_score_and_the_suggested_k(swept):
    summary, per_k = _Tables(swept._repr_html_()).tables
    rows = dict(summary)
    assert rows["suggested k"].startswith(f"{swept.suggested_k} (") and swept.suggestion["reason"] in rows["suggested k"]
    assert rows["ks"] == "2, 3, 4" and rows["scan (ny, nx)"] == "20 x 24"
    header, *body = per_k
    assert header == ["k", *swept.scores, "cluster sizes"]
    for i, (k, row) in enumerate(zip(swept.ks, body)):
        assert row[0] == (f"{k} (suggested)" if k == swept.suggested_k else str(k))
        for name, cell in zip(swept.scores, row[1:]):
            assert float(cell) == pytest.approx(swept.scores[name][i], rel=1e-3), name
        assert [int(n) for n in row[-1].split()] == np.bincount(swept.results[k].labels.ravel(), minlength=k).tolist()


# ------------------------------------------------------------------------------- explore()
def test_explore_links_the_label_map_to_each_clusters_mean_pattern(result):
    shown = result.explore()
    assert shown._lazy  # a dask cube: only the k patterns are held
    assert [a.scale for a in shown.axes_manager.navigation_axes] == [SCAN_STEP_NM, SCAN_STEP_NM]
    assert [a.units for a in shown.axes_manager.signal_axes] == ["1/nm", "1/nm"]
    navigator = shown._plot.navigator_plot.ax.images[0]
    np.testing.assert_array_equal(np.asarray(navigator.get_array()), result.labels)
    pattern = shown._plot.signal_plot.ax.images[0]
    for y, x in [(0, 0), (13, 5), (19, 23)]:
        shown.axes_manager.indices = (x, y)
        np.testing.assert_array_equal(np.asarray(pattern.get_array()), result.mean_patterns[result.labels[y, x]])
    # the whole cube, read chunk by chunk, is each position's cluster pattern
    np.testing.assert_array_equal(np.asarray(shown.data), result.mean_patterns[result.labels])
    assert pyplot.get_fignums()  # the two views were drawn


def test_explore_cmap_of_the_navigator_is_the_label_colours(result):
    shown = result.explore()
    image = shown._plot.navigator_plot.ax.images[0]
    for label in range(3):
        assert image.cmap(image.norm(label)) == pytest.approx(to_rgba(label_colours(3)[label]))


def test_explore_of_a_big_scan_never_builds_the_cube(result):
    # a (128, 256) scan of (128, 128) patterns: a 2 GiB cube of float32 if it were built
    import dataclasses
    import tracemalloc

    from gpu4d.views import EXPLORE_CHUNK_BYTES

    rng = np.random.default_rng(0)
    big = dataclasses.replace(
        result, labels=rng.integers(0, 3, (128, 256)).astype(np.int32),
        mean_patterns=rng.random((3, 128, 128)).astype(np.float32), confidence=None,
    )
    tracemalloc.start()
    try:
        shown = big.explore()
        shown.axes_manager.indices = (200, 100)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert shown.data.nbytes == 2 * 2**30
    assert np.prod(shown.data.chunksize) * 4 <= EXPLORE_CHUNK_BYTES
    assert peak < 4 * EXPLORE_CHUNK_BYTES  # a chunk or two, never the cube
    pattern = shown._plot.signal_plot.ax.images[0]
    np.testing.assert_array_equal(np.asarray(pattern.get_array()), big.mean_patterns[big.labels[100, 200]])
