"""gpu4d.scores: the numpy scores against scikit-learn's, and the separation against np.var."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)

from gpu4d.scores import min_separation, reduced_space_scores, silhouettes, subsample


def blobs(seed, n=900, dim=5, k=4):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(k, dim))
    labels = rng.integers(0, k, n)
    z = (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32)
    return z, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_scikit_learn(seed):
    z, labels = blobs(seed)
    # labels that are not 0..k-1, and one cluster of a single member
    labels = labels * 3 + 7
    labels[5] = 100
    sample = subsample(z.shape[0], 400, seed)
    scores = reduced_space_scores(z, labels, sample)
    z64 = z.astype(np.float64)
    assert scores["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(z64, labels), rel=1e-9)
    assert scores["davies_bouldin"] == pytest.approx(davies_bouldin_score(z64, labels), rel=1e-9)
    reference = silhouette_score(z64[sample], labels[sample])
    assert scores["silhouette"] == pytest.approx(reference, rel=1e-9, abs=1e-12)


def test_silhouette_with_a_singleton_in_the_sample():
    z, labels = blobs(3, n=60)
    labels[0] = 9  # alone: scikit-learn scores it 0
    sample = np.arange(60)
    assert reduced_space_scores(z, labels, sample)["silhouette"] == pytest.approx(
        silhouette_score(z.astype(np.float64), labels), rel=1e-9
    )


def test_silhouettes_of_several_labelings_at_once_match_scikit_learn():
    """Every labeling's silhouette from one blocked pass over the sample's distances (blocks
    smaller than the sample, a last partial block), each against scikit-learn's; NaN where a
    labeling has one cluster in the sample."""
    z, labels = blobs(4)
    sample = subsample(z.shape[0], 300, 0)
    labelings = np.stack([labels, labels % 2, labels * 10 + 3, np.zeros_like(labels)], axis=1)
    got = silhouettes(z, sample, labelings, block=64)
    for column, value in zip(labelings.T, got[:3]):
        assert value == pytest.approx(silhouette_score(z[sample].astype(np.float64), column[sample]), rel=1e-9)
    assert np.isnan(got[3])


def test_separation_is_the_mahalanobis_distance_under_the_pooled_covariance():
    z, labels = blobs(5, k=3)
    z64 = z.astype(np.float64)
    expected = np.inf
    for a in range(3):
        for b in range(a + 1, 3):
            both = np.concatenate([z64[labels == a] - z64[labels == a].mean(axis=0),
                                   z64[labels == b] - z64[labels == b].mean(axis=0)])
            pooled = np.cov(both.T, bias=True)  # numpy's covariance of the centred members
            delta = z64[labels == b].mean(axis=0) - z64[labels == a].mean(axis=0)
            expected = min(expected, np.sqrt(delta @ np.linalg.inv(pooled) @ delta))
    assert min_separation(z, labels) == pytest.approx(expected, rel=1e-5)


def test_separation_of_two_halves_of_one_blob_is_small_and_of_two_blobs_large():
    rng = np.random.default_rng(0)
    blob = rng.normal(size=(4000, 6))
    halves = (blob[:, 0] > 0).astype(int)
    assert 2.0 < min_separation(blob, halves) < 4.0  # one region cut in two
    apart = np.concatenate([blob, blob + np.r_[12.0, np.zeros(5)]])
    assert min_separation(apart, np.repeat([0, 1], 4000)) > 10.0


def test_undefined_scores_are_nan():
    z, _ = blobs(6, n=50)
    scores = reduced_space_scores(z, np.zeros(50, int), np.arange(50))
    assert all(np.isnan(v) for v in scores.values())
