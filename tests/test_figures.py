"""Figures of clustering results (gpu4d.figures): content, files, colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib import pyplot
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
    assert pyplot.get_fignums() == []  # nothing leaked into pyplot's global state


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


# -------------------------------------------------- scale bars, colour-bar ticks, empty clusters
def _scale_bar_texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in _image_axes(fig) for t in ax.texts]


@pytest.mark.parametrize(("shape", "pixel_size"), [((64, 64), 0.18), ((128, 256), 0.05), ((200, 40), 2.5)])
def test_pattern_grid_scale_bar_matches_the_calibration(shape, pixel_size) -> None:
    patterns = np.random.default_rng(0).random((3, *shape))
    fig = make_pattern_grid_figure(patterns, pixel_size=pixel_size, pixel_units="1/nm")
    for ax in _image_axes(fig):
        (label,) = [t.get_text() for t in ax.texts]
        value, units = label.split(" ", 1)
        assert units == "1/nm"
        assert float(value) * 10 ** -np.floor(np.log10(float(value))) in (1.0, 2.0, 5.0)
        # the white bar drawn over a black one: its length in pixels times the pixel size
        bar = [line for line in ax.lines if line.get_color() == "white"][0]
        length_px = abs(np.diff(bar.get_xdata())[0])
        assert length_px * pixel_size == pytest.approx(float(value), rel=1e-9)
        assert length_px <= shape[1] * 0.6  # it fits in the panel
    assert not _scale_bar_texts(make_pattern_grid_figure(patterns))  # uncalibrated: none


def _visible_tick_labels(fig: Figure):
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    for bar in (ax for ax in fig.axes if ax.get_label() == "<colorbar>" and ax.axison):
        box = bar.get_window_extent(renderer)
        labels = []
        for text in bar.yaxis.get_ticklabels():
            extent = text.get_window_extent(renderer)
            if text.get_text() and box.y0 - 1 <= (extent.y0 + extent.y1) / 2 <= box.y1 + 1:
                labels.append(extent)
        yield labels


@pytest.mark.parametrize("shape", [(64, 64), (128, 256), (32, 256), (256, 48), (144, 144)])
@pytest.mark.parametrize("decades", [0.3, 1.0, 2.5, 6.0])
@pytest.mark.parametrize("log", [True, False])
def test_colour_bar_tick_labels_never_overlap(shape, decades, log) -> None:
    rng = np.random.default_rng(1)
    patterns = 10 ** (rng.random((3, *shape)) * decades)  # from 1 to 10^decades
    fig = make_pattern_grid_figure(patterns, log=log)
    for labels in _visible_tick_labels(fig):
        assert len(labels) >= 2, "a colour bar needs at least two labelled ticks to be read"
        labels.sort(key=lambda e: e.y0)
        for lower, upper in zip(labels, labels[1:]):
            assert lower.y1 <= upper.y0, "tick labels overlap"


def test_empty_cluster_is_said_in_words() -> None:
    patterns = np.random.default_rng(2).random((3, 20, 30))
    patterns[1] = 0.0
    fig = make_pattern_grid_figure(patterns, sizes=[5, 0, 7], pixel_size=0.2, pixel_units="1/nm")
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [bool(ax.images) for ax in panels] == [True, False, True]
    assert "empty cluster" in " ".join(t.get_text() for t in panels[1].texts)
    assert panels[1].get_title() == "label 1"
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert [ax.axison for ax in bars] == [True, False, True]


def test_written_results_have_scale_bars_and_empty_panels(tmp_path: Path) -> None:
    """Through gpu4d.cluster on a calibrated scan: the grid files carry the calibration."""
    import gpu4d
    from gpu4d.io.dataset import Axis, Dataset
    from gpu4d.figures import nice_length

    data = np.ones((3, 3, 16, 16), np.float32)  # every pattern alike: k = 3 leaves empty clusters
    dataset = Dataset(data, (Axis("y", 3), Axis("x", 3)), (Axis("qy", 16, 0.18, 0, "1/nm"), Axis("qx", 16, 0.18, 0, "1/nm")), "flat")
    result = gpu4d.cluster(dataset, 3, mask="none", align=None, n_init=1)
    assert sorted(result.cluster_sizes.tolist()) == [0, 0, 9]
    fig = make_pattern_grid_figure(result.mean_patterns, sizes=result.cluster_sizes, pixel_size=0.18, pixel_units="1/nm")
    assert _scale_bar_texts(fig) == [f"{nice_length(0.25 * 16 * 0.18):g} 1/nm"]  # a quarter of the panel
    result.save(tmp_path / "out")
    _read_png(tmp_path / "out" / "mean_patterns.png")


# --------------------------------------------------------- label colours across a sweep's ks
def test_matching_permutation_maximizes_the_overlap() -> None:
    from itertools import permutations

    from gpu4d.relabel import matching_permutation

    rng = np.random.default_rng(3)
    for _ in range(20):
        previous = rng.integers(0, 3, 60)
        current = rng.integers(0, 5, 60)
        perm = matching_permutation(previous, current, 3, 5)
        assert sorted(perm.tolist()) == list(range(5))
        kept = sum(np.sum((previous == j) & (perm[current] == j)) for j in range(3))
        best = max(
            sum(np.sum((previous == j) & (current == c)) for j, c in enumerate(choice))
            for choice in permutations(range(5), 3)
        )
        assert kept == best


def test_sweep_keeps_a_region_s_label_across_ks() -> None:
    from itertools import permutations

    import gpu4d
    from gpu4d.synthetic import make_scan

    scan = make_scan(scan_shape=(24, 24), detector_shape=(48, 48), n_grains=3, seed=5)
    sweep = gpu4d.sweep(scan.data, ks=range(2, 7), mask="auto")
    raw = scan.data.reshape(-1, 48, 48).astype(np.float64)
    for previous_k, k in zip(sweep.ks, sweep.ks[1:]):
        before, after = sweep[previous_k].labels.ravel(), sweep[k].labels.ravel()
        overlap = np.zeros((previous_k, k), int)
        np.add.at(overlap, (before, after), 1)
        # keeping the labels 0..previous_k-1 shares as many scan positions as the best
        # one-to-one matching of the previous clusters to the new ones (brute force)
        best = max(sum(overlap[j, c] for j, c in enumerate(choice)) for choice in permutations(range(k), previous_k))
        assert np.trace(overlap[:, :previous_k]) == best, (previous_k, k)
        # the renumbered results are still self-consistent
        result = sweep[k]
        np.testing.assert_array_equal(result.cluster_sizes, np.bincount(after, minlength=k))
        for j in range(k):
            np.testing.assert_allclose(result.mean_patterns[j], raw[after == j].mean(axis=0), rtol=1e-4)
