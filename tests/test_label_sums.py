"""The CPU label-sum kernel against numpy float64 (``np.add.at``)."""

import numpy as np
import pytest

from gpu4d.kernels.label_sums import BLOCK, launch_label_sums_cpu


def reference(rows, labels, k):
    sums = np.zeros((k, rows.shape[1]))
    for c in range(labels.shape[1]):
        np.add.at(sums, labels[:, c], rows.astype(np.float64))
    return sums


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("n_columns", [1, 3])
def test_label_sums_match_numpy(dtype, n_columns):
    rng = np.random.default_rng(0)
    m = BLOCK + 37  # a full block and a short one
    rows = (rng.random((50, m)) * 200).astype(dtype)
    labels = rng.integers(0, 7, (50, n_columns)).astype(np.int32)
    sums = np.full((7, m), 0.5)  # added to, not overwritten
    squares = np.full(m, 0.25)
    launch_label_sums_cpu(rows, labels, sums, squares)
    np.testing.assert_allclose(sums, reference(rows, labels, 7) + 0.5, rtol=1e-12)
    np.testing.assert_allclose(squares, (rows.astype(np.float64) ** 2).sum(axis=0) + 0.25, rtol=1e-12)
    without = np.full((7, m), 0.5)
    launch_label_sums_cpu(rows, labels, without)  # no squares asked
    np.testing.assert_array_equal(without, sums)


def test_empty_batch_changes_nothing():
    sums = np.ones((2, 5))
    launch_label_sums_cpu(np.zeros((0, 5), np.float32), np.zeros((0, 1), np.int32), sums)
    assert (sums == 1).all()
