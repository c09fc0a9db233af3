"""gpu4d.cluster on the CPU backend against scikit-learn run directly on the same matrix."""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

import gpu4d

from .helpers import bytes_read_by_this_process, needs_proc_io
from .reference import preprocess_reference


def spot_scan(seed=0, scan=(12, 10), detector=(21, 19), n_regions=3):
    """Regions (vertical bands) with their own spot pattern, a bright beam and Poisson noise."""
    rng = np.random.default_rng(seed)
    ny, nx = scan
    truth = np.minimum(np.arange(nx) * n_regions // nx, n_regions - 1)[None, :].repeat(ny, 0)
    expected = np.full((ny, nx, *detector), 1.0)
    cy, cx = detector[0] // 2, detector[1] // 2
    for region in range(n_regions):
        spots = rng.integers(0, detector[0], 4), rng.integers(0, detector[1], 4)
        block = expected[truth == region]
        block[:, spots[0], spots[1]] += 30
        expected[truth == region] = block
    thickness = np.linspace(50, 400, nx)[None, :, None, None]  # beam intensity varies a lot
    expected[:, :, cy - 1 : cy + 2, cx - 1 : cx + 2] += thickness
    return rng.poisson(expected).astype(np.uint16), truth


def test_labels_match_sklearn_on_the_same_matrix():
    """exact=True is full-dimensional KMeans on the preprocessed matrix: scikit-learn's."""
    data, _ = spot_scan(scan=(24, 20))
    result = gpu4d.cluster(
        data, 3, mask=(10, 9, 2.5), normalize="max", transform="none", align=None, exact=True, random_state=0
    )
    masked = result.mask.masked
    features = preprocess_reference(data.reshape(-1, *data.shape[2:]), masked, "none", "max")
    reference = KMeans(3, n_init=3, random_state=0).fit(features.astype(np.float32))
    assert adjusted_rand_score(reference.labels_, result.labels.ravel()) >= 0.99
    assert result.inertia == pytest.approx(reference.inertia_, rel=1e-3)


def test_result_contents():
    data, truth = spot_scan()
    result = gpu4d.cluster(data, 3, mask="auto", random_state=1)
    assert result.labels.shape == truth.shape and result.labels.dtype == np.int32
    assert result.centroids.shape == (3, *data.shape[2:]) and result.centroids.dtype == np.float32
    assert adjusted_rand_score(truth.ravel(), result.labels.ravel()) >= 0.95  # an easy scan
    assert result.backend == "cpu"
    assert result.cluster_sizes.sum() == truth.size
    # the auto mask found the beam at the detector centre and covers it
    cy, cx = result.mask.centre
    assert abs(cy - 10) < 0.5 and abs(cx - 9) < 0.5
    assert result.mask.masked[10, 9] and not result.mask.masked[0, 0]
    assert not result.centroids[:, result.mask.masked].any()
    # mean patterns are the plain means of the raw patterns of each cluster
    flat = data.reshape(-1, *data.shape[2:]).astype(np.float64)
    for label in range(3):
        want = flat[result.labels.ravel() == label].mean(axis=0)
        np.testing.assert_allclose(result.mean_patterns[label], want, rtol=1e-5)
    assert set(result.timings) >= {"open", "mask", "kmeans"}
    # the summary states the counts per pattern the map stood on (the beam brightens to the right)
    signal = result.summary()["signal"]
    sums = flat.sum(axis=(1, 2))
    assert signal["mean_counts_per_pattern"] == pytest.approx(sums.mean(), rel=1e-5)
    for label in range(3):
        assert signal["cluster_counts_per_pattern"][label] == pytest.approx(
            sums[result.labels.ravel() == label].mean(), rel=1e-5
        )


@pytest.mark.parametrize("batch_size", [1, 7, None])
def test_streamed_equals_in_memory(batch_size):
    data, _ = spot_scan(seed=2)
    whole = gpu4d.cluster(data, 3, batch_size=data.shape[0] * data.shape[1], random_state=0)
    streamed = gpu4d.cluster(data, 3, batch_size=batch_size, random_state=0)
    np.testing.assert_array_equal(streamed.labels, whole.labels)
    np.testing.assert_allclose(streamed.centroids, whole.centroids, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(streamed.mean_patterns, whole.mean_patterns, rtol=1e-6)


def test_same_seed_same_labels_and_inputs_untouched():
    data, _ = spot_scan(seed=3)
    before = data.copy()
    first = gpu4d.cluster(data, 4, random_state=5)
    second = gpu4d.cluster(data, 4, random_state=5)
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(data, before)


@pytest.mark.parametrize("transform, normalize", [("sqrt", "l2"), ("log1p", "sum"), ("none", "none")])
def test_options_reach_the_features(transform, normalize):
    data, _ = spot_scan(seed=4)
    result = gpu4d.cluster(data, 2, mask="none", transform=transform, normalize=normalize, exact=True)
    features = preprocess_reference(data.reshape(-1, *data.shape[2:]), result.mask.masked, transform, normalize)
    reference = KMeans(2, n_init=3, random_state=0).fit(features.astype(np.float32))
    assert adjusted_rand_score(reference.labels_, result.labels.ravel()) >= 0.99
    assert result.parameters["transform"] == transform and result.parameters["normalize"] == normalize


def test_to_signals_keeps_calibrations():
    import hyperspy.api as hs

    data, _ = spot_scan(seed=5)
    signal = hs.signals.Signal2D(data)
    nav_x, nav_y = signal.axes_manager.navigation_axes
    nav_x.scale, nav_x.units, nav_y.scale, nav_y.units = 12.8, "nm", 12.8, "nm"
    for axis in signal.axes_manager.signal_axes:
        axis.scale, axis.units = 0.05, "1/nm"
    result = gpu4d.cluster(signal, 2)
    signals = result.to_signals()
    labels_axes = signals["labels"].axes_manager.signal_axes
    assert [a.scale for a in labels_axes] == [12.8, 12.8] and labels_axes[0].units == "nm"
    centroid_axes = signals["centroids"].axes_manager.signal_axes
    assert [a.scale for a in centroid_axes] == [0.05, 0.05] and centroid_axes[0].units == "1/nm"
    assert signals["centroids"].axes_manager.navigation_shape == (2,)
    np.testing.assert_array_equal(signals["labels"].data, result.labels)


@needs_proc_io
def test_a_file_is_read_a_bounded_number_of_times_by_cluster(tmp_path):
    """The streamed cluster (README) reads a .blo (file reads, not kept) a whole number of
    times: the sketch's passes (two on a quarter of the patterns, one on all), the final pass,
    the "auto" alignment's measuring pass and the sample the mean pattern is found in: at most
    six. (Batches are read as whole scan
    rows: a batch size that is not a multiple of the row re-reads the rows it shares with the
    next batch.)"""
    from gpu4d.synthetic import write_blo

    data, _ = spot_scan(seed=6, scan=(48, 40), detector=(64, 64))  # 7.9 MB: metadata reads are noise
    path = tmp_path / "scan.blo"
    write_blo(path, np.clip(data, 0, 255).astype(np.uint8))
    size = path.stat().st_size
    mask = (32, 32, 3.0)  # explicit (the alignment still reads a sample for the mean pattern)
    gpu4d.cluster(path, 3, mask=mask)  # imports and compiled kernels loaded: not counted below
    for batch_size in (120, None):  # 3 scan rows; the default
        before = bytes_read_by_this_process()
        gpu4d.cluster(path, 3, mask=mask, batch_size=batch_size)
        scans_read = (bytes_read_by_this_process() - before) / size
        assert 5 <= scans_read <= 6.5, (batch_size, scans_read)
