"""cluster's defaults (sqrt, "auto" alignment, regions merged from KMeans atoms) and its
``exact=True`` path (full-dimensional KMeans) on easy gpu4d.synthetic scans, against the truth.

The scans have 576 patterns: enough for the regions' statistics, so the default really takes
the region path (it carries a confidence map, the exact path does not).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import gpu4d
from gpu4d.synthetic import make_scan

from .reference import preprocess_reference

#: name -> make_scan arguments: three grains and a twin lamella, on a still and on a drifting
#: beam (2 px of descan, which "auto" alignment must notice and correct)
SCANS = {
    "still": dict(scan_shape=(24, 24), detector_shape=(48, 48), n_grains=3, seed=1),
    "drifting": dict(scan_shape=(24, 24), detector_shape=(32, 32), n_grains=3, defect=False, drift_px=2.0, seed=1),
}


@pytest.fixture(scope="module", params=list(SCANS))
def easy_scan(request):
    return request.param, make_scan(**SCANS[request.param])


@pytest.mark.parametrize("exact", [False, True], ids=["default", "exact"])
def test_both_paths_recover_an_easy_scan(easy_scan, exact):
    name, scan = easy_scan
    k = scan.n_regions
    result = gpu4d.cluster(scan.data, k, exact=exact)
    assert result.parameters["transform"] == "sqrt" and result.parameters["align"] == "auto"
    assert adjusted_rand_score(scan.labels.ravel(), result.labels.ravel()) >= 0.95
    # the default is the region path, which alone gives a confidence per pattern
    assert (result.confidence is None) == exact

    alignment = result.summary()["alignment"]["auto"]
    assert alignment["applied"] == (name == "drifting")
    assert (result.centres is not None) == alignment["applied"]
    if alignment["applied"]:
        # the measured beam follows the true descan (up to the reference's offset)
        offset = np.median((result.centres - scan.beam_centres).reshape(-1, 2), axis=0)
        np.testing.assert_allclose(result.centres, scan.beam_centres + offset, atol=0.5)
    else:
        # no alignment: the centroids are the per-cluster means of the blurred, sqrt-transformed,
        # max-normalized kept pixels, and the mean patterns those of the raw patterns
        flat = scan.data.reshape(-1, *scan.data.shape[2:])
        features = preprocess_reference(flat, result.mask.masked, "sqrt", "max", blur_px=result.parameters["blur_px"])
        for label in range(k):
            members = result.labels.ravel() == label
            assert members.any()
            np.testing.assert_allclose(
                result.centroids[label][~result.mask.masked], features[members].mean(0), rtol=1e-4, atol=1e-6
            )
            np.testing.assert_allclose(
                result.mean_patterns[label], flat[members].mean(0, dtype=np.float64), rtol=1e-5, atol=1e-3
            )


def test_default_result_carries_a_confidence_map(easy_scan, tmp_path):
    _, scan = easy_scan
    result = gpu4d.cluster(scan.data, scan.n_regions)
    confidence = result.confidence
    assert confidence.shape == scan.labels.shape
    assert np.isfinite(confidence).all()
    assert confidence.min() >= 0.0 and confidence.max() <= 1.0
    assert np.median(confidence) > 0.5  # an easy scan: most patterns clearly in their region
    # summary.json's section describes this very map
    summary = result.summary()["confidence"]
    assert summary["share_low"] == pytest.approx(float((confidence < summary["low_below"]).mean()))
    assert summary["median"] == pytest.approx(float(np.median(confidence)))
    # and it is saved beside the labels
    folder = result.save(tmp_path / "run", figures=False)
    np.testing.assert_array_equal(np.load(folder / "confidence.npy"), confidence)


def test_patterns_mixing_two_crystals_have_low_confidence():
    """A pattern that is half one grain and half the other (a probe on a boundary, overlapping
    crystals) is as close to both clusters: its confidence is low, its neighbours' high."""
    from gpu4d.synthetic import make_scan

    options = dict(n_grains=1, defect=False, thickness_gradient=False, dtype="float32")
    a = make_scan((24, 24), (32, 32), seed=1, **options).data
    b = make_scan((24, 24), (32, 32), seed=2, **options).data
    data = a.copy()
    data[:, 12:] = b[:, 12:]
    mixed = [(5, 5), (12, 12), (20, 17)]
    for y, x in mixed:
        data[y, x] = (a[y, x] + b[y, x]) / 2
    confidence = gpu4d.cluster(data, 2).confidence
    for y, x in mixed:
        assert confidence[y, x] < 0.5, (y, x, confidence[y, x])
    pure = np.ones(confidence.shape, bool)
    for y, x in mixed:
        pure[y, x] = False
    assert np.median(confidence[pure]) > 0.8


def test_auto_alignment_clusters_a_scan_without_a_beam_as_it_is():
    """align="auto" aligns when it can: a scan whose mean pattern is flat (no direct beam to
    measure: here two regions that swap two pixels' intensity) is clustered unaligned, and
    summary.json says why, where align="fit" is an error."""
    from sklearn.metrics import adjusted_rand_score

    from gpu4d.errors import InputError

    data = np.full((24, 24, 16, 16), 3, np.uint16)
    data[:, :12, 4, 4], data[:, :12, 10, 10] = 6, 0
    data[:, 12:, 4, 4], data[:, 12:, 10, 10] = 0, 6
    result = gpu4d.cluster(data, 2, mask="none")
    auto = result.summary()["alignment"]["auto"]
    assert auto["applied"] is False and "flat" in auto["reason"]
    truth = np.repeat([[0] * 12 + [1] * 12], 24, axis=0)
    assert adjusted_rand_score(truth.ravel(), result.labels.ravel()) == 1.0
    with pytest.raises(InputError, match="flat"):
        gpu4d.cluster(data, 2, mask="none", align="fit")


@pytest.mark.parametrize("drift_px, on_grid", [(0.0, True), (0.2, False), (0.8, False), (2.0, False)])
def test_auto_alignment_decides_on_a_grid_only_far_below_the_threshold(drift_px, on_grid):
    """"auto" fits the descan on a grid of the patterns first and skips the pass over every
    pattern only when the beam wanders there by less than half the threshold; nearer or above
    it the decision is the full fit's. The grid's decision and the full fit's agree."""
    from gpu4d.align import AUTO_ALIGN_THRESHOLD_PX
    from gpu4d.alignment import GRID_PATTERNS

    synthetic = make_scan(scan_shape=(40, 40), detector_shape=(32, 32), n_grains=3, defect=False,
                          drift_px=drift_px, seed=2)
    assert synthetic.data.shape[0] * synthetic.data.shape[1] > GRID_PATTERNS  # so the grid is used
    auto = gpu4d.cluster(synthetic.data, 3).summary()["alignment"]["auto"]
    assert ("measured_on" in auto) is on_grid
    full = gpu4d.cluster(synthetic.data, 3, align="fit").summary()["alignment"]
    wander = max(a - b for a, b in zip(full["shift_max_px"], full["shift_min_px"]))
    assert auto["applied"] is (wander >= AUTO_ALIGN_THRESHOLD_PX)
    if on_grid:
        assert auto["wander_px"] < 0.5 * AUTO_ALIGN_THRESHOLD_PX and wander < AUTO_ALIGN_THRESHOLD_PX
    else:
        assert auto["wander_px"] == pytest.approx(wander, abs=1e-6)
