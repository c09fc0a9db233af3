"""Live with a model: ``LiveRun(model=...)`` / ``gpu4d live --model DIR`` classify frames as they
arrive against a saved result (no refitting), as ``gpu4d.classify`` classifies the whole scan."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.metrics import adjusted_rand_score

import gpu4d
from gpu4d.cli import main
from gpu4d.live import EXIT_ERROR, LiveClassifier, LiveRun
from gpu4d.synthetic import make_scan

from .helpers import SAME_PHASE_DETECTOR, SAME_PHASE_SECOND, same_phase_scans
from .mib_writer import encode_frames, growing_mib
from .reference import preprocess_reference

DETECTOR = SAME_PHASE_DETECTOR
SECOND = SAME_PHASE_SECOND


@pytest.fixture(autouse=True)
def _one_thread_pools():
    """Spin-waiting BLAS/OpenMP threads slow a busy 2-core CI machine many times over."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def scans():
    return same_phase_scans(0.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, scans):
    folder = tmp_path_factory.mktemp("model") / "scan1-k3"
    gpu4d.cluster(scans[0].data, 3).save(folder, figures=False)
    return folder


def frames_of(scan):
    return scan.data.reshape(-1, *DETECTOR)


def batches(frames, size):
    for start in range(0, len(frames), size):
        yield frames[start : start + size]


def ari(a, b):
    return adjusted_rand_score(np.ravel(a), np.ravel(b))


def test_live_classification_equals_classify_on_the_same_frames(model_dir, scans, tmp_path):
    second = scans[1]
    snapshots = []
    run = LiveRun(batches(frames_of(second), 37), scan_shape=SECOND, model=model_dir, out=tmp_path / "out",
                  figures=False, snapshot_every_s=0.05, batch_size=64,
                  callback=lambda r, p: snapshots.append(r.clusterer.labels))
    outcome = run.run()
    assert outcome.status == "complete" and outcome.exit_code == 0, outcome.message
    result = outcome.result
    assert ari(result.labels, second.labels) >= 0.95
    reference = gpu4d.classify(model_dir, second.data)
    np.testing.assert_array_equal(result.labels, reference.labels)  # the same kernel, the same float64 distances
    np.testing.assert_allclose(result.confidence, reference.confidence, atol=1e-6)
    np.testing.assert_array_equal(result.cluster_sizes, reference.cluster_sizes)
    np.testing.assert_allclose(result.mean_patterns, reference.mean_patterns, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(result.centroids, reference.centroids)
    assert result.inertia == pytest.approx(reference.inertia, rel=1e-6)
    assert result.extra["model"] == str(model_dir) and result.n_clusters == 3
    assert any((s == -1).any() and (s >= 0).any() for s in snapshots)  # partial maps on the way
    out = tmp_path / "out"
    np.testing.assert_array_equal(np.load(out / "labels.npy"), reference.labels)
    np.testing.assert_allclose(np.load(out / "confidence.npy"), reference.confidence, atol=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == str(model_dir) and summary["live"]["classified_with_model"]
    progress = json.loads((out / "progress.json").read_text())
    assert progress["frames_processed"] == SECOND[0] * SECOND[1] and progress["n_clusters"] == 3


def test_live_classification_subtracts_the_models_detector_offset(scans, tmp_path):
    """A model of a scan with a pedestal: the frames of the next scan (the same pedestal) are
    classified as ``classify`` classifies that scan, which finds the same offset in it."""
    first, second = scans
    pedestal = np.uint16(100)
    folder = tmp_path / "model"
    model = gpu4d.cluster(first.data + pedestal, 3)
    assert model.mask.detector_offset >= 100
    model.save(folder, figures=False)
    run = LiveRun(batches(frames_of(second) + pedestal, 37), scan_shape=SECOND, model=folder,
                  out=tmp_path / "out", figures=False, batch_size=64)
    outcome = run.run()
    assert outcome.status == "complete", outcome.message
    reference = gpu4d.classify(folder, second.data + pedestal)
    assert reference.mask.detector_offset == model.mask.detector_offset
    np.testing.assert_array_equal(outcome.result.labels, reference.labels)
    assert ari(outcome.result.labels, second.labels) >= 0.95


def test_live_labels_match_a_float64_nearest_centroid_reference(model_dir, scans):
    """Independent of gpu4d's kernels: mask, blur (the model's sigma), sqrt, max-normalize
    (``tests.reference``, numpy/scipy float64), scipy's distances."""
    model = gpu4d.load_result(model_dir)
    frames = frames_of(scans[1])
    kept = ~model.mask.masked
    features = preprocess_reference(frames, model.mask.masked, "sqrt", "max", blur_px=model.parameters["blur_px"])
    distances = np.sort(cdist(features, model.centroids[:, kept].astype(np.float64)), axis=1)
    with LiveClassifier(model, SECOND, batch_size=5) as live:
        for frame in frames:  # one by one, processed in odd chunks
            live.receive(frame)
            if live.frames_received % 9 == 0:
                live.process()
        # a frame is classified once the frames right of and below it are in (they are its
        # neighbours for spikes, gpu4d.spikes); labels first: the class sums wait until no
        # frame is waiting
        received = len(frames) - len(frames) % 9
        assert live.frames_processed == received - (SECOND[1] + 1) and live.frames_summed == 0
        live.process()  # classifies the last frames
        assert live.frames_summed == 0
        assert live.process() == 0 and live.frames_summed == len(frames)  # idle: the sums catch up
        result = live.finish()
    np.testing.assert_array_equal(result.labels.ravel(),
                                  cdist(features, model.centroids[:, kept].astype(np.float64)).argmin(axis=1))
    np.testing.assert_allclose(result.confidence.ravel(), 1 - distances[:, 0] / distances[:, 1], atol=1e-4)
    labels = result.labels.ravel()
    for c in range(3):  # unaligned mean patterns: plain means of the raw frames of each class
        np.testing.assert_allclose(result.mean_patterns[c], frames[labels == c].mean(axis=0), rtol=1e-5)


def test_a_drifted_scan_is_shifted_frame_by_frame_onto_the_model_reference():
    first, second = same_phase_scans(2.5)
    model = gpu4d.cluster(first.data, 3)
    assert gpu4d.model.model_aligned(model)
    outcome = LiveRun(batches(frames_of(second), 50), scan_shape=SECOND, model=model, batch_size=100).run()
    result = outcome.result
    assert outcome.status == "complete" and ari(result.labels, second.labels) >= 0.95
    # each frame's measured beam is the true one (the synthetic scan knows it)
    np.testing.assert_allclose(result.centres, second.beam_centres, atol=0.35)
    info = result.extra["alignment"]
    assert info["live_method"] == "com" and info["reference"] == model.extra["alignment"]["reference"]
    assert info["frames_shifted"] > 0
    # classify fits a smooth descan field over the whole scan, live measures each frame: the
    # shifts differ by a fraction of a pixel, so labels may differ near a class boundary
    reference = gpu4d.classify(model, second.data)
    assert np.mean(result.labels == reference.labels) >= 0.99
    for c in range(3):  # the class means, aligned onto the same reference beam
        assert np.corrcoef(result.mean_patterns[c].ravel(), reference.mean_patterns[c].ravel())[0, 1] > 0.999
    # a summary without the window radius: the window comes from the beam radius, as when measured
    del model.extra["alignment"]["window_radius_px"]
    with LiveClassifier(model, SECOND) as again:
        again.receive(frames_of(second))
        older = again.finish()
    assert older.extra["alignment"]["window_radius_px"] == pytest.approx(info["window_radius_px"])
    np.testing.assert_array_equal(older.labels, result.labels)


def test_cli_live_with_a_model_on_a_mib_being_written(model_dir, scans, tmp_path, capsys):
    second = scans[1]
    frames = frames_of(second)
    path = tmp_path / "growing.mib"
    with growing_mib(path, frames):
        time.sleep(0.05)  # the file exists before the CLI checks the source
        code = main(["live", str(path), "--model", str(model_dir), "--scan", "20x28",
                     "--out", str(tmp_path / "out"), "--timeout", "5", "--no-figures", "-q"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "560 of 560 frames received" in printed.out and f"model    {model_dir}" in printed.out
    labels = np.load(tmp_path / "out" / "labels.npy")
    np.testing.assert_array_equal(labels, gpu4d.classify(model_dir, second.data).labels)
    assert ari(labels, second.labels) >= 0.95


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_cli_live_with_a_model_against_the_merlin_simulator(model_dir, scans, tmp_path, merlin_sim, capsys):
    from .mib_writer import acquisition_header

    second = scans[1]
    mib = tmp_path / "scan.mib"
    mib.write_bytes(encode_frames(frames_of(second), counter_depth=12))
    hdr = mib.with_suffix(".hdr")
    hdr.write_bytes(acquisition_header(560, counter_depth=12, scan_shape=SECOND))
    port = merlin_sim(hdr)
    out = tmp_path / "out"
    code = main(["live", f"merlin://127.0.0.1:{port}", "--model", str(model_dir), "-k", "3",
                 "--scan", "20x28", "--out", str(out), "-q"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    np.testing.assert_array_equal(np.load(out / "labels.npy"), gpu4d.classify(model_dir, second.data).labels)
    for name in ("labels.png", "mean_patterns.png", "confidence.npy", "summary.json", "progress.json"):
        assert (out / name).is_file(), name


def test_a_stream_that_ends_early_saves_the_frames_classified(model_dir, scans, tmp_path):
    second = scans[1]
    frames = frames_of(second)[:300]  # of 560
    outcome = LiveRun(batches(frames, 64), scan_shape=SECOND, model=model_dir, out=tmp_path / "out",
                      figures=True).run()
    assert outcome.status == "incomplete" and outcome.exit_code == 3
    result = outcome.result
    labels = result.labels.ravel()
    assert (labels[300:] == -1).all() and (labels[:300] >= 0).all()
    assert (result.confidence.ravel()[300:] == 0).all()
    # the summary's share of low-confidence patterns counts the 300 frames that arrived only
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["confidence"]
    assert summary["patterns"] == 300
    assert summary["share_low"] == pytest.approx(float((result.confidence.ravel()[:300] < 0.5).mean()))
    assert result.cluster_sizes.sum() == 300
    reference = gpu4d.classify(model_dir, second.data).labels.ravel()
    np.testing.assert_array_equal(labels[:300], reference[:300])
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "labels.npy").ravel(), labels)
    assert json.loads((tmp_path / "out" / "progress.json").read_text())["frames_received"] == 300


def test_frames_of_another_detector_shape_end_the_run_naming_both_shapes(model_dir, tmp_path):
    small = make_scan((8, 8), (48, 48), n_grains=3, defect=False, seed=1).data.reshape(-1, 48, 48)
    outcome = LiveRun(batches(small, 16), scan_shape=(8, 8), model=model_dir, out=tmp_path / "out",
                      figures=False).run()
    assert outcome.status == "error" and outcome.exit_code == EXIT_ERROR
    assert "(48, 48)" in outcome.message and "(64, 64)" in outcome.message and str(model_dir) in outcome.message
    assert outcome.progress["frames_received"] == 0  # refused at the first frame, nothing stored


def test_a_source_that_says_its_shape_is_refused_before_any_frame(model_dir):
    class Source:  # a FrameSource whose detector shape is known when it opens
        detector_shape = (48, 48)

        def batches(self, max_frames):
            raise AssertionError("no frame should be asked for")

        def close(self):
            pass

    outcome = LiveRun(Source(), scan_shape=(8, 8), model=model_dir, warm_up=False).run()
    assert outcome.status == "error" and "(48, 48)" in outcome.message and "(64, 64)" in outcome.message


def test_cli_wrong_detector_shape_is_one_line(model_dir, tmp_path, capsys):
    small = make_scan((4, 4), (48, 48), n_grains=3, defect=False, seed=1).data.reshape(-1, 48, 48)
    path = tmp_path / "small.mib"
    path.write_bytes(encode_frames(small))
    code = main(["live", str(path), "--model", str(model_dir), "--scan", "4x4", "--out", str(tmp_path / "out"),
                 "--timeout", "1", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_ERROR and len(err) == 1
    assert err[0].startswith("gpu4d: error:") and "(48, 48)" in err[0] and "(64, 64)" in err[0]


def test_arguments_that_contradict_the_model(model_dir, tmp_path, capsys):
    with pytest.raises(gpu4d.InputError, match=r"n_clusters=4 differs from the model's n_clusters=3"):
        LiveRun([], 4, SECOND, model=model_dir)
    with pytest.raises(gpu4d.InputError, match=r"normalize='l2' does not apply with a model"):
        LiveRun([], scan_shape=SECOND, model=model_dir, normalize="l2")
    with pytest.raises(gpu4d.InputError, match="n_clusters is required without a model"):
        LiveRun([], scan_shape=SECOND)
    with pytest.raises(gpu4d.InputError, match="no such results folder"):
        LiveRun([], scan_shape=SECOND, model=tmp_path / "missing")
    source = tmp_path / "scan.mib"
    source.write_bytes(b"")
    for extra, expected in ((["--model", str(model_dir), "--normalize", "l2"], "--normalize does not apply"),
                            ([], "-k/--n-clusters is required without --model"),
                            (["--model", str(model_dir), "-k", "5"], "differs from the model's")):
        code = main(["live", str(source), "--scan", "4x4", "--out", str(tmp_path / "o"), "-q", *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == EXIT_ERROR and len(err) == 1 and expected in err[0], err
    # the model folder is an input: no results folder inside it
    code = main(["live", str(source), "--model", str(model_dir), "--scan", "4x4",
                 "--out", str(model_dir / "live"), "-q"])
    assert code == EXIT_ERROR and not (model_dir / "live").exists()
    capsys.readouterr()


@pytest.mark.parametrize("n, m, k", [(1, 1, 1), (97, 257, 3), (257, 97, 16)])
def test_squared_distance_kernel_against_numpy_float64(n, m, k):
    from gpu4d.kernels.distances import launch_squared_distances_cpu

    rng = np.random.default_rng(n)
    rows = rng.random((n, m), dtype=np.float32)
    centres = rng.random((k, m))
    got = launch_squared_distances_cpu(rows, centres, (centres**2).sum(axis=1))
    expected = cdist(rows.astype(np.float64), centres, "sqeuclidean")
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * m)
