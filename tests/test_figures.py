"""Figures of clustering results (gpu4d.figures): content, files, colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib._pylab_helpers import Gcf
from matplotlib.figure import Figure
from matplotlib.image import imread

from gpu4d.figures import (
    UNSCANNED_COLOUR,
    label_colours,
    make_centre_map_figure,
    make_label_map_figure,
    make_label_map_grid_figure,
    make_pattern_grid_figure,
    make_score_curves_figure,
    plot_centre_map,
    plot_label_map,
    plot_label_map_grid,
    plot_pattern_grid,
    plot_score_curves,
)

KS = [2, 3, 4, 5]
SCORES = {
    "inertia": [10.0, 6.0, 4.0, 3.5],
    "silhouette": [float("nan"), 0.6, 0.7, 0.5],
    "calinski_harabasz": [5.0, 9.0, 12.0, 11.0],
    "davies_bouldin": [1.2, 0.9, 0.7, 0.8],
}


def _bands(shape=(20, 30), fractions=(0.5, 0.3, 0.2)) -> np.ndarray:
    """Label map of horizontal bands, label i covering ``fractions[i]`` of the rows."""
    edges = np.round(np.cumsum((0, *fractions)) * shape[0]).astype(int)
    labels = np.empty(shape, dtype=np.int64)
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        labels[a:b] = i
    return labels


def _legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def _image_axes(fig: Figure):
    return [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]


def _read_png(path: Path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    return image


def _pixels_of(image: np.ndarray, colour) -> int:
    """Number of pixels of ``colour`` (RGB within half an 8-bit step)."""
    close = np.abs(image[..., :3] - np.asarray(colour[:3])) < 0.6 / 255
    return int(np.count_nonzero(np.all(close, axis=-1)))


@pytest.fixture(autouse=True)
def _no_pyplot_figures():
    yield
    assert Gcf.get_num_fig_managers() == 0  # nothing leaked into pyplot's global state


# -------------------------------------------------------------------------------- colours
@pytest.mark.parametrize("n", [0, 1, 3, 10, 11, 20, 21, 40])
def test_label_colours_are_distinct_rgba(n: int) -> None:
    colours = label_colours(n)
    assert len(colours) == n
    assert len(set(colours)) == n
    assert all(len(c) == 4 and all(0.0 <= v <= 1.0 for v in c) for c in colours)
    assert UNSCANNED_COLOUR not in colours


def test_label_colours_are_stable_up_to_twenty() -> None:
    tab10 = [tuple(float(v) for v in (*c, 1.0)) for c in colormaps["tab10"].colors]
    assert label_colours(4) == tab10[:4]
    for n in (10, 12, 20):
        assert label_colours(n)[:10] == tab10


def test_label_colours_rejects_negative() -> None:
    with pytest.raises(ValueError, match="n=-1 should be >= 0"):
        label_colours(-1)


# ------------------------------------------------------------------------------ label map
def test_label_map_legend_counts_and_unscanned() -> None:
    labels = np.array([[0, 0, 1], [1, 2, -1]])
    fig = make_label_map_figure(labels)
    assert _legend_texts(fig) == [
        "label 0 (2 px, 33.3%)",
        "label 1 (2 px, 33.3%)",
        "label 2 (1 px, 16.7%)",
        "not scanned yet (1 px, 16.7%)",
    ]
    ax = fig.axes[0]
    assert ax.get_title() == "Map of clusters (k = 3)"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x (px)", "y (px)")


def test_label_map_without_unscanned_has_no_such_entry() -> None:
    texts = _legend_texts(make_label_map_figure(_bands()))
    assert len(texts) == 3
    assert not any("not scanned" in t for t in texts)


def test_label_map_calibrated_axes_and_title() -> None:
    fig = make_label_map_figure(_bands(), scan_step=2.5, scan_units="nm", title="Region 1")
    ax = fig.axes[0]
    assert ax.get_title() == "Region 1"
    assert ax.get_xlabel() == "x (nm)"
    assert ax.images[0].get_extent() == [0.0, 75.0, 50.0, 0.0]


def test_label_map_lists_empty_labels_with_n_labels() -> None:
    texts = _legend_texts(make_label_map_figure(_bands(), n_labels=5))
    assert texts[3:] == ["label 3 (0 px, 0.0%)", "label 4 (0 px, 0.0%)"]
    with pytest.raises(ValueError, match="labels go up to 2, which needs n_labels >= 3; got 2"):
        make_label_map_figure(_bands(), n_labels=2)


def test_label_map_float_nan_is_unscanned() -> None:
    labels = np.array([[0.0, 1.0], [np.nan, 1.0]])
    assert _legend_texts(make_label_map_figure(labels))[-1] == "not scanned yet (1 px, 25.0%)"


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.zeros((2, 2, 2), dtype=int), r"2-D array \(ny, nx\); got shape \(2, 2, 2\)"),
        (np.array([[0, -3]]), "should be >= 0, or -1 where not scanned; found -3"),
        (np.array([[0.5, 1.0]]), "whole numbers"),
    ],
)
def test_label_map_rejects_bad_labels(labels, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_label_map_figure(labels)


def test_plot_label_map_png_shows_label_colours(tmp_path: Path) -> None:
    labels = _bands((40, 60), (0.5, 0.3, 0.2))
    labels[-2:, :] = -1  # two unscanned rows
    path = plot_label_map(labels, tmp_path / "map.png")
    assert path == tmp_path / "map.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.png"]
    image = _read_png(path)
    counts = [_pixels_of(image, c) for c in label_colours(3)]
    assert all(c > 1000 for c in counts), counts
    # The bands' areas, not just the legend swatches: the map dominates the pixel counts.
    assert counts[0] > counts[1] > counts[2]
    assert _pixels_of(image, UNSCANNED_COLOUR) > 200


def test_plot_label_map_other_format(tmp_path: Path) -> None:
    path = plot_label_map(_bands(), tmp_path / "map.svg")
    assert path.read_text().lstrip().startswith("<?xml")


# --------------------------------------------------------------------------- pattern grid
def test_pattern_grid_titles_colours_and_colour_bars() -> None:
    patterns = np.random.default_rng(0).random((5, 16, 16))
    fig = make_pattern_grid_figure(patterns, title="Centroids")
    panels = _image_axes(fig)
    assert [ax.get_title() for ax in panels] == [f"label {i}" for i in range(5)]
    for ax, colour in zip(panels, label_colours(5)):
        assert ax.title.get_color() == colour
    assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == 5
    assert fig.get_suptitle() == "Centroids"
    assert sum(ax.axison for ax in fig.axes) == 10  # 3 x 2 grid: the sixth cell is blank


def test_pattern_grid_names_and_log() -> None:
    patterns = np.zeros((2, 8, 8))
    patterns[:, 4, 4] = [100.0, 5.0]
    fig = make_pattern_grid_figure(patterns, names=["amorphous", "crystal"], log=True)
    panels = _image_axes(fig)
    assert [ax.get_title() for ax in panels] == ["amorphous", "crystal"]
    assert type(panels[0].images[0].norm).__name__ == "LogNorm"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patterns": np.zeros((4, 4))}, r"3-D array \(k, qy, qx\)"),
        ({"patterns": np.zeros((2, 4, 4)), "names": ["a"]}, "names has 1 entries; there are 2"),
    ],
)
def test_pattern_grid_rejects_bad_input(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_pattern_grid_figure(**kwargs)


def test_plot_pattern_grid_png(tmp_path: Path) -> None:
    patterns = np.random.default_rng(1).random((3, 12, 12))
    _read_png(plot_pattern_grid(patterns, tmp_path / "centroids.png"))


# ----------------------------------------------------------------------------- centre map
def test_centre_map_offsets_from_median() -> None:
    centres = np.zeros((4, 5, 2))
    centres[..., 0] = 10.0 + np.arange(4)[:, None]
    centres[..., 1] = 20.0
    fig = make_centre_map_figure(centres)
    panels = _image_axes(fig)
    assert [ax.get_title() for ax in panels] == ["\u0394cy (vertical)", "\u0394cx (horizontal)"]
    assert "(11.50, 20.00)" in fig.get_suptitle()
    np.testing.assert_allclose(panels[0].images[0].get_array()[:, 0], [-1.5, -0.5, 0.5, 1.5])
    assert panels[0].images[0].get_clim() == (-1.5, 1.5)


def test_plot_centre_map_with_reference(tmp_path: Path) -> None:
    centres = np.full((6, 6, 2), 32.0)
    centres[0, 0] = np.nan
    path = plot_centre_map(centres, tmp_path / "centres.png", reference=(31.0, 33.0))
    _read_png(path)
    fig = make_centre_map_figure(centres, reference=(31.0, 33.0))
    assert "(31.00, 33.00)" in fig.get_suptitle()


def test_centre_map_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(ny, nx, 2\)"):
        make_centre_map_figure(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="no finite"):
        make_centre_map_figure(np.full((2, 2, 2), np.nan))


# --------------------------------------------------------------------------- score curves
def test_score_curves_panels_and_suggested_k() -> None:
    fig = make_score_curves_figure(KS, {**SCORES, "my_score": [1, 2, 3, 4]}, suggested_k=4)
    titles = [ax.get_title() for ax in fig.axes if ax.axison]
    assert titles == [
        "Inertia\n(lower is better; look for the elbow)",
        "Silhouette\n(higher is better)",
        "Calinski\u2013Harabasz\n(higher is better)",
        "Davies\u2013Bouldin\n(lower is better)",
        "My score",
    ]
    for ax in fig.axes[:5]:
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["suggested k = 4"]
        assert any(list(line.get_xdata()) == [4, 4] for line in ax.get_lines())


def test_score_curves_without_suggestion_has_no_legend() -> None:
    fig = make_score_curves_figure(KS, {"inertia": SCORES["inertia"]})
    assert fig.axes[0].get_legend() is None


def test_score_curves_rejects_length_mismatch() -> None:
    with pytest.raises(ValueError, match=r"scores\['inertia'\] has 2 values; there are 4 ks"):
        make_score_curves_figure(KS, {"inertia": [1.0, 2.0]})


def test_plot_score_curves_png(tmp_path: Path) -> None:
    _read_png(plot_score_curves(KS, SCORES, tmp_path / "scores.png", suggested_k=4))


# ------------------------------------------------------------------------ label map grid
def test_label_map_grid_titles_in_k_order() -> None:
    maps = {4: _bands(fractions=(0.25,) * 4), 2: _bands(fractions=(0.5, 0.5)), 3: _bands()}
    fig = make_label_map_grid_figure(maps)
    assert [ax.get_title() for ax in _image_axes(fig)] == ["k = 2", "k = 3", "k = 4"]
    assert _legend_texts(fig) == [f"label {i}" for i in range(4)]


def test_plot_label_map_grid_png(tmp_path: Path) -> None:
    maps = {k: _bands(fractions=(1 / k,) * k) for k in (2, 3)}
    image = _read_png(plot_label_map_grid(maps, tmp_path / "maps.png"))
    assert all(_pixels_of(image, c) > 100 for c in label_colours(3))
