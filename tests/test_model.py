"""Models: ``gpu4d.load_result`` round-trips a results folder, ``ClusterResult.predict`` and
``gpu4d classify`` map a second scan of the same phases (other layout, other size)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.metrics import adjusted_rand_score

import gpu4d
from gpu4d.io.dataset import Axis, open_dataset
from gpu4d.model import nearest_and_confidence
from gpu4d.synthetic import make_scan

from .helpers import SAME_PHASE_DETECTOR, CountingArray, run_main, same_phase_scans
from .reference import preprocess_reference

DETECTOR = SAME_PHASE_DETECTOR


@pytest.fixture(scope="module")
def scans():
    return same_phase_scans(0.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, scans):
    folder = tmp_path_factory.mktemp("model") / "scan1-k3"
    gpu4d.cluster(scans[0].data, 3).save(folder, figures=False)
    return folder


def _tree_hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_second_scan_has_the_same_phases_in_another_layout(scans):
    first, second = scans
    assert first.labels.shape != second.labels.shape
    assert set(np.unique(first.labels)) == set(np.unique(second.labels)) == {0, 1, 2}
    # the same phases: outside the direct beam, the mean pattern of grain g in one scan
    # correlates with grain g's in the other (> 0.99), not with the other grains' (< 0.6)
    yy, xx = np.indices(DETECTOR)
    spots = np.hypot(yy - 31.5, xx - 31.5) > 3 * first.beam_radius
    means = [[np.sqrt(s.data[s.labels == g].mean(axis=0))[spots] for g in range(3)] for s in (first, second)]
    correlation = np.array([[np.corrcoef(means[0][i], means[1][j])[0, 1] for j in range(3)] for i in range(3)])
    assert correlation.diagonal().min() > 0.99
    assert correlation[~np.eye(3, dtype=bool)].max() < 0.6


def test_load_result_round_trips_every_array_and_parameter(tmp_path, scans):
    original = gpu4d.cluster(scans[0].data, 3)
    original.save(tmp_path / "m", figures=False)
    loaded = gpu4d.load_result(tmp_path / "m")
    for name in ("labels", "centroids", "mean_patterns", "cluster_sizes", "confidence"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(original, name), err_msg=name)
        assert getattr(loaded, name).dtype == getattr(original, name).dtype, name
    np.testing.assert_array_equal(loaded.mask.masked, original.mask.masked)
    assert loaded.mask.describe() == json.loads(json.dumps(original.mask.describe()))
    assert loaded.parameters == json.loads(json.dumps(original.parameters))
    assert loaded.scan_axes == original.scan_axes and loaded.detector_axes == original.detector_axes
    assert (loaded.source, loaded.inertia, loaded.n_iter) == (original.source, original.inertia, original.n_iter)
    assert loaded.extra["alignment"] == json.loads(json.dumps(original.extra["alignment"]))
    # load is the inverse of save: the loaded result writes the same summary.json
    assert json.loads(json.dumps(loaded.summary())) == json.loads((tmp_path / "m" / "summary.json").read_text())


def test_load_result_keeps_centres_and_calibrations(tmp_path, scans):
    original = gpu4d.cluster(scans[0].data, 3)
    calibrated = dataclasses.replace(
        original,
        scan_axes=(Axis("y", 32, 2.5, 1.0, "nm"), Axis("x", 32, 2.5, -3.0, "nm")),
        detector_axes=(Axis("qy", 64, 0.11, -3.5, "1/nm"), Axis("qx", 64, 0.11, -3.5, "1/nm")),
        centres=np.random.default_rng(0).normal(31.5, 0.3, (32, 32, 2)).astype(np.float32),
    )
    calibrated.save(tmp_path / "m", figures=False)
    loaded = gpu4d.load_result(tmp_path / "m")
    assert loaded.scan_axes == calibrated.scan_axes and loaded.detector_axes == calibrated.detector_axes
    np.testing.assert_array_equal(loaded.centres, calibrated.centres)


def test_predict_matches_a_float64_nearest_centroid_reference(model_dir, scans):
    """Labels and confidence against numpy/scipy: mask, blur (the model's sigma), sqrt,
    max-normalize (``tests.reference``), nearest centroid."""
    model = gpu4d.load_result(model_dir)
    assert model.parameters["transform"] == "sqrt" and model.parameters["normalize"] == "max"
    assert model.parameters["blur_px"] > 0
    assert not gpu4d.model.model_aligned(model)  # no drift: auto left the patterns where they were
    data = scans[1].data
    kept = ~model.mask.masked
    features = preprocess_reference(
        data.reshape(-1, *DETECTOR), model.mask.masked, "sqrt", "max", blur_px=model.parameters["blur_px"]
    )
    distances = cdist(features, model.centroids[:, kept].astype(np.float64))
    ordered = np.sort(distances, axis=1)
    for batch_size in (None, 7):
        prediction = model.predict(data, batch_size=batch_size, return_distances=True)
        np.testing.assert_array_equal(prediction.labels.ravel(), distances.argmin(axis=1))
        np.testing.assert_allclose(prediction.confidence.ravel(), 1 - ordered[:, 0] / ordered[:, 1], atol=1e-4)
        np.testing.assert_allclose(prediction.distances.reshape(-1, 3), distances, rtol=1e-4, atol=1e-5)
        assert prediction.labels.dtype == np.int32 and prediction.confidence.dtype == np.float32


def test_predict_maps_a_second_scan_of_the_same_phases(model_dir, scans):
    prediction = gpu4d.load_result(model_dir).predict(scans[1].data)
    assert prediction.labels.shape == prediction.confidence.shape == (20, 28)
    assert adjusted_rand_score(scans[1].labels.ravel(), prediction.labels.ravel()) >= 0.95
    assert 0.0 <= prediction.confidence.min() and prediction.confidence.max() <= 1.0
    assert np.median(prediction.confidence) > 0.5  # the patterns sit near their class


def test_predict_aligns_a_drifted_scan_onto_the_model_reference(tmp_path):
    first, second = same_phase_scans(2.5)
    model = gpu4d.cluster(first.data, 3)
    assert model.extra["alignment"]["auto"]["applied"]
    model.save(tmp_path / "m", figures=False)
    loaded = gpu4d.load_result(tmp_path / "m")
    prediction = loaded.predict(second.data)
    assert prediction.alignment["reference"] == loaded.extra["alignment"]["reference"]
    # the shifts move each measured beam onto the model's reference
    assert adjusted_rand_score(second.labels.ravel(), prediction.labels.ravel()) >= 0.95
    beam = second.beam_centres.reshape(-1, 2)
    np.testing.assert_allclose(beam - prediction.shifts, np.broadcast_to(loaded.extra["alignment"]["reference"], beam.shape),
                               atol=0.35)
    # without the shifts the same model maps the drift, not the grains
    loaded.parameters["align"] = None
    assert gpu4d.model.alignment_plan(loaded) is None
    unaligned = loaded.predict(second.data)
    assert adjusted_rand_score(second.labels.ravel(), unaligned.labels.ravel()) < 0.9


def test_nearest_and_confidence_by_hand():
    labels, confidence = nearest_and_confidence(np.array([[1.0, 3.0, 4.0], [2.0, 2.0, 5.0], [0.0, 0.0, 1.0], [5.0, 4.0, 0.0]]))
    np.testing.assert_array_equal(labels, [0, 0, 0, 2])
    np.testing.assert_allclose(confidence, [2 / 3, 0.0, 0.0, 1.0])
    labels, confidence = nearest_and_confidence(np.array([[2.0], [0.0]]))
    np.testing.assert_array_equal(confidence, [1.0, 1.0])


def test_a_detector_shape_mismatch_names_both_shapes(model_dir):
    other = make_scan((8, 8), (48, 48), n_grains=3, defect=False, seed=1).data
    with pytest.raises(gpu4d.InputError, match=r"\(48, 48\).*\(64, 64\)"):
        gpu4d.load_result(model_dir).predict(other)


def test_a_detector_scale_mismatch_names_both_scales(model_dir, scans):
    model = gpu4d.load_result(model_dir)
    model.detector_axes = (Axis("qy", 64, 0.1, 0.0, "1/nm"), Axis("qx", 64, 0.1, 0.0, "1/nm"))
    dataset = open_dataset(scans[1].data)
    for scale, fails in ((0.103, True), (0.1005, False)):
        calibrated = dataclasses.replace(
            dataset, detector_axes=(Axis("qy", 64, scale, 0.0, "1/nm"), Axis("qx", 64, scale, 0.0, "1/nm"))
        )
        if fails:
            with pytest.raises(gpu4d.InputError, match=r"0\.103 1/nm.*0\.1 1/nm"):
                model.predict(calibrated)
        else:
            assert model.predict(calibrated).labels.shape == (20, 28)


def test_a_folder_that_is_not_a_result_is_a_clear_error(tmp_path, model_dir):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "scan.txt").write_text("x")
    with pytest.raises(gpu4d.InputError, match=r"notes is not a gpu4d results folder \(no \.gpu4d-result marker and no summary\.json\)"):
        gpu4d.load_result(tmp_path / "notes")
    with pytest.raises(gpu4d.InputError, match="missing: no such results folder"):
        gpu4d.load_result(tmp_path / "missing")
    incomplete = tmp_path / "incomplete"
    shutil.copytree(model_dir, incomplete)
    (incomplete / "centroids.npy").unlink()
    with pytest.raises(gpu4d.InputError, match=r"incomplete: centroids\.npy is missing"):
        gpu4d.load_result(incomplete)


def test_a_sweep_folder_says_to_pass_one_of_its_k_subfolders(tmp_path, scans):
    gpu4d.sweep(scans[0].data, [2, 3]).save(tmp_path / "sw", figures=False)
    with pytest.raises(gpu4d.InputError, match=r"sw is a sweep; pass one of its k subfolders .*k02"):
        gpu4d.load_result(tmp_path / "sw")
    prediction = gpu4d.load_result(tmp_path / "sw" / "k03").predict(scans[1].data)
    assert adjusted_rand_score(scans[1].labels.ravel(), prediction.labels.ravel()) >= 0.95


def test_cli_classify_writes_the_usual_result_files(tmp_path, model_dir, scans):
    scan = tmp_path / "scan2.npy"
    np.save(scan, scans[1].data)
    before = _tree_hashes(model_dir)
    code, out, err = run_main(["classify", scan, "--model", model_dir, "--out", tmp_path / "out", "-q"])
    assert code == 0, err
    folder = tmp_path / "out"
    for name in ("labels.npy", "confidence.npy", "centroids.npy", "mean_patterns.npy", "mask.npy",
                 "summary.json", "clusters.hspy", "labels.png", ".gpu4d-result"):
        assert (folder / name).is_file(), name
    labels = np.load(folder / "labels.npy")
    assert adjusted_rand_score(scans[1].labels.ravel(), labels.ravel()) >= 0.95
    confidence = np.load(folder / "confidence.npy")
    assert confidence.shape == (20, 28) and 0.0 <= confidence.min() and confidence.max() <= 1.0
    np.testing.assert_array_equal(np.load(folder / "centroids.npy"), np.load(model_dir / "centroids.npy"))
    # the mean raw pattern of each class over the new scan, against numpy float64
    data = scans[1].data.reshape(-1, *DETECTOR).astype(np.float64)
    expected = np.stack([data[labels.ravel() == c].mean(axis=0) for c in range(3)])
    np.testing.assert_allclose(np.load(folder / "mean_patterns.npy"), expected, rtol=1e-5)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["model"] == str(model_dir) and summary["scan_shape"] == [20, 28]
    assert summary["cluster_sizes"] == np.bincount(labels.ravel(), minlength=3).tolist()
    assert "model" in out and str(model_dir) in out
    assert _tree_hashes(model_dir) == before
    # the classified folder is itself a result that loads
    assert gpu4d.load_result(folder).n_clusters == 3


def test_cli_refuses_an_out_inside_the_model_folder(tmp_path, model_dir, scans):
    scan = tmp_path / "scan2.npy"
    np.save(scan, scans[1].data)
    before = _tree_hashes(model_dir)
    for out in (model_dir / "classified", model_dir):
        code, _, err = run_main(["classify", scan, "--model", model_dir, "--out", out, "--overwrite", "-q"])
        assert code == 2
        assert err.startswith("gpu4d: error:") and len(err.strip().splitlines()) == 1, err
        assert str(model_dir) in err
    assert _tree_hashes(model_dir) == before


def test_cli_errors_are_one_line(tmp_path, model_dir):
    small = tmp_path / "small.npy"
    np.save(small, make_scan((8, 8), (48, 48), n_grains=3, defect=False, seed=1).data)
    code, _, err = run_main(["classify", small, "--model", model_dir, "--out", tmp_path / "o", "-q"])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "(48, 48)" in err and "(64, 64)" in err
    (tmp_path / "notes").mkdir()
    code, _, err = run_main(["classify", small, "--model", tmp_path / "notes", "--out", tmp_path / "o2", "-q"])
    assert code == 2 and "not a gpu4d results folder" in err and len(err.strip().splitlines()) == 1


def test_an_auto_model_that_needed_no_shift_still_aligns_a_drifted_scan(model_dir):
    """The model's scan had no descan, so auto shifted nothing; a drifted scan of the same
    phases is shifted onto the model's beam, and a scan without drift is left alone."""
    model = gpu4d.load_result(model_dir)
    assert gpu4d.model.alignment_plan(model) == "auto"
    _, drifted = same_phase_scans(2.5)
    with pytest.warns(UserWarning, match="border the model masked"):
        prediction = model.predict(drifted.data)
    assert prediction.alignment["auto"]["applied"]
    assert adjusted_rand_score(drifted.labels.ravel(), prediction.labels.ravel()) >= 0.95
    still = model.predict(make_scan((20, 28), DETECTOR, n_grains=3, defect=False, seed=1).data)
    assert not still.alignment["auto"]["applied"] and still.shifts is None


def test_a_damaged_summary_is_a_clear_error(tmp_path, model_dir):
    damaged = tmp_path / "damaged"
    shutil.copytree(model_dir, damaged)
    (damaged / "summary.json").write_text("{not json")
    with pytest.raises(gpu4d.InputError, match=r"damaged/summary\.json: cannot read it as JSON"):
        gpu4d.load_result(damaged)
    (damaged / "summary.json").write_text(json.dumps({"parameters": {}}))
    with pytest.raises(gpu4d.InputError, match=r"summary\.json: has no 'mask'"):
        gpu4d.load_result(damaged)


def test_cli_classify_frames_with_a_scan_shape(tmp_path, model_dir, scans):
    frames = tmp_path / "frames.npy"
    np.save(frames, scans[1].data.reshape(-1, *DETECTOR))
    code, _, err = run_main(["classify", frames, "--model", model_dir, "--scan", "20x28", "--batch-size", 9,
                          "--no-figures", "--out", tmp_path / "out", "-q"])
    assert code == 0, err
    labels = np.load(tmp_path / "out" / "labels.npy")
    assert labels.shape == (20, 28) and not (tmp_path / "out" / "labels.png").exists()
    assert adjusted_rand_score(scans[1].labels.ravel(), labels.ravel()) >= 0.95


def test_classify_reads_a_scan_once_when_it_must_align_it():
    """Alignment, distances and mean patterns are three passes; a scan that is not read cheaply
    (here a dask array) is read once, then kept in memory (``engine.RawCache``)."""
    import dask.array as da

    first, second = same_phase_scans(2.5)
    model = gpu4d.cluster(first.data, first.n_regions)
    assert model.extra["alignment"]["auto"]["applied"]
    counting = CountingArray(second.data)
    result = gpu4d.classify(model, da.from_array(counting, chunks=(4, -1, -1, -1)))
    assert adjusted_rand_score(second.labels.ravel(), result.labels.ravel()) >= 0.95
    # the mean pattern's sample (MEAN_PATTERN_SAMPLE patterns: all of this small scan) and one
    # pass; measured 2.0, and 4.0 when each pass read the scan again
    assert counting.bytes_read / second.data.nbytes < 2.5, counting.bytes_read / second.data.nbytes
    # memory_budget=0 keeps nothing: every pass reads the scan again, with the same labels
    again = CountingArray(second.data)
    unkept = gpu4d.classify(model, da.from_array(again, chunks=(4, -1, -1, -1)), memory_budget=0)
    assert again.bytes_read / second.data.nbytes > 3.5, again.bytes_read / second.data.nbytes
    np.testing.assert_array_equal(unkept.labels, result.labels)
