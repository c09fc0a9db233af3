"""gpu4d.regions: atoms merged by separation, on point sets whose right answer is known.

The case the module exists for: a large region whose points spread along a gradient next to a
small compact region. KMeans at k = 2 cuts the gradient in two (lower inertia) and leaves the
small region inside one half; the regions keep the gradient whole and the small region apart.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from gpu4d.regions import fit_region_tree, smooth_over_scan, stability


def gradient_and_small_region(seed: int, n_big: int = 3000, n_small: int = 90):
    """(points (n, 4) float32, truth (n,)): a uniform 1-D gradient 12 long (noise 0.3 across it)
    and a compact region 3 off its middle, 3% of the points."""
    rng = np.random.default_rng(seed)
    big = np.zeros((n_big, 4))
    big[:, 0] = rng.uniform(-6.0, 6.0, n_big)
    big[:, 1:] = rng.normal(0.0, 0.3, (n_big, 3))
    small = rng.normal(0.0, 0.3, (n_small, 4)) + np.array([0.0, 3.0, 0.0, 0.0])
    points = np.concatenate([big, small]).astype(np.float32)
    return points, np.repeat([0, 1], [n_big, n_small])


@pytest.mark.parametrize("seed", range(5))
def test_a_gradient_stays_whole_and_a_small_region_apart(seed):
    z, truth = gradient_and_small_region(seed)
    tree = fit_region_tree(np, z, 4, rng=np.random.default_rng(seed))
    assert adjusted_rand_score(truth, tree.labels(2)) >= 0.95
    # KMeans, the objective the regions replace, prefers the split gradient
    kmeans = KMeans(2, n_init=10, random_state=seed).fit(z)
    assert adjusted_rand_score(truth, kmeans.labels_) < 0.5


def test_cuts_are_nested_and_keep_label_ids():
    z, _ = gradient_and_small_region(7)
    tree = fit_region_tree(np, z, 6, rng=np.random.default_rng(0))
    previous = tree.labels(1)
    assert (previous == 0).all()
    for k in range(2, 7):
        labels = tree.labels(k)
        assert set(np.unique(labels)) == set(range(k))
        # every cluster of k lies inside one cluster of k - 1, and keeps its id unless it is
        # the new, smaller part of the one that split
        for label in range(k):
            parents = np.unique(previous[labels == label])
            assert parents.size == 1
            assert label == k - 1 or parents[0] == label
        previous = labels


def test_clusters_below_the_minimum_size_never_stand_alone():
    z, _ = gradient_and_small_region(3)
    outliers = np.full((3, 4), 40.0, np.float32) + np.arange(3, dtype=np.float32)[:, None]
    tree = fit_region_tree(np, np.concatenate([z, outliers]), 3, rng=np.random.default_rng(0))
    sizes = np.bincount(tree.labels(3))
    assert sizes.min() >= tree.min_size


def test_stability_is_one_for_the_regions_and_lower_for_a_split_along_noise():
    rng = np.random.default_rng(1)
    blobs = np.concatenate([rng.normal(0, 1, (800, 3)), rng.normal(0, 1, (800, 3)) + [12.0, 0, 0]])
    z = blobs.astype(np.float32)
    tree = fit_region_tree(np, z, 4, rng=np.random.default_rng(0))
    scores = stability(np, z, tree, [2, 3, 4], rng=np.random.default_rng(2))
    assert scores[2] == pytest.approx(1.0, abs=1e-6)
    assert scores[3] < scores[2] and scores[4] < scores[2]


def test_smoothing_keeps_an_edge_and_averages_noise():
    """A step between two regions survives the smoothing; the noise inside each is reduced."""
    rng = np.random.default_rng(0)
    ny, nx = 40, 40
    step = np.where(np.arange(nx)[None, :] < 20, 0.0, 10.0).repeat(ny, axis=0)
    z = (step[..., None] + rng.normal(0, 1, (ny, nx, 3))).reshape(-1, 3).astype(np.float32)
    smoothed = smooth_over_scan(np, z, (ny, nx)).reshape(ny, nx, 3)
    noise_before = (z.reshape(ny, nx, 3) - step[..., None])[:, 2:18].std()
    noise_after = (smoothed - step[..., None])[:, 2:18].std()
    assert noise_after < 0.6 * noise_before
    # the two columns at the edge stay on their own side of the midpoint, every row
    assert (smoothed[:, 19, 0] < 5.0).all() and (smoothed[:, 20, 0] > 5.0).all()


def test_smoothing_is_the_weighted_mean_of_the_eight_neighbours():
    """Against a direct float64 loop over every pattern and its (up to) 8 neighbours."""
    rng = np.random.default_rng(4)
    ny, nx, c = 5, 7, 2
    z = rng.normal(size=(ny * nx, c)).astype(np.float32)
    grid = z.reshape(ny, nx, c).astype(np.float64)
    pairs = []
    for y in range(ny):
        for x in range(nx):
            for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
                if 0 <= y + dy < ny and 0 <= x + dx < nx:
                    pairs.append(((grid[y, x] - grid[y + dy, x + dx]) ** 2).sum())
    scale = np.median(pairs)
    expected = np.empty_like(grid)
    for y in range(ny):
        for x in range(nx):
            total, weight = grid[y, x].copy(), 1.0
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = y + dy, x + dx
                    if (dy, dx) != (0, 0) and 0 <= yy < ny and 0 <= xx < nx:
                        w = np.exp(-((grid[y, x] - grid[yy, xx]) ** 2).sum() / scale)
                        total += w * grid[yy, xx]
                        weight += w
            expected[y, x] = total / weight
    np.testing.assert_allclose(smooth_over_scan(np, z, (ny, nx)), expected.reshape(-1, c), rtol=1e-5, atol=1e-6)


def test_confidence_of_every_k_matches_its_definition():
    """1 - d_own / d_other per pattern, from the atoms of a region's size, computed pattern by
    pattern; the same for any chunking of the patterns."""
    z, _ = gradient_and_small_region(4)
    outliers = np.full((3, 4), 40.0, np.float32)  # an atom below the minimum size
    z = np.concatenate([z, outliers])
    tree = fit_region_tree(np, z, 5, rng=np.random.default_rng(0))
    ks = [1, 2, 3, 5]
    got = tree.confidence(z, ks, chunk=777)
    usable = tree.sizes[: tree.n_atoms] >= tree.min_size
    assert not usable.all()  # the outliers' atom is left out of the distances
    distances = np.linalg.norm(z[:, None, :].astype(np.float64) - tree.atom_means[None].astype(np.float64), axis=2)
    np.testing.assert_array_equal(got[1], 1.0)
    for k in ks[1:]:
        region = tree.cluster_labels(k)
        counted = usable | ~np.isin(region, region[usable])  # a region with no big atom counts all its own
        own = region[tree.atom_of]
        d_own = np.where(counted & (region[None, :] == own[:, None]), distances, np.inf).min(axis=1)
        d_other = np.where(counted & (region[None, :] != own[:, None]), distances, np.inf).min(axis=1)
        want = np.clip(1.0 - d_own / d_other, 0.0, 1.0)
        np.testing.assert_allclose(got[k], want, atol=1e-6)
    np.testing.assert_array_equal(tree.confidence(z, ks)[3], got[3])
