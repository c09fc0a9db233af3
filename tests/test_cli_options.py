"""One command-line test per option that had none, each checking that the option took effect
(recorded in summary.json / sweep.json / progress.json, or a behaviour that changes), and
``init=`` of the API against scikit-learn started from the same centroids."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

import gpu4d
from gpu4d.synthetic import make_scan

from .mib_writer import acquisition_header, encode_frames
from .reference import preprocess_reference
from .test_sweep import MASK, region_scan

MASK_TEXT = ",".join(str(v) for v in MASK)


def read_json(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def scan_file(tmp_path_factory):
    """region_scan (16x18 patterns of 24x24, 4 regions) as a .npy file, with its truth."""
    data, truth = region_scan()
    path = tmp_path_factory.mktemp("scan") / "scan.npy"
    np.save(path, data)
    return path, truth


# -- --align ------------------------------------------------------------------------------------

#: Measured beam centres: within this of the true ones (measured error 0.05 px at this dose).
CENTRE_TOL_PX = 0.25


@pytest.fixture(scope="module")
def drifted(tmp_path_factory):
    """A 16x16 scan (48x48 patterns, 5 regions) whose beam wanders by up to 2 px (descan)."""
    scan = make_scan((16, 16), (48, 48), drift_px=2.0, seed=1, dtype="uint16")
    path = tmp_path_factory.mktemp("drift") / "drifted.npy"
    np.save(path, scan.data)
    return path, scan


def check_aligned_run(out, scan, method):
    centres = np.load(out / "centres.npy")
    assert centres.shape == (*scan.labels.shape, 2)
    np.testing.assert_allclose(centres, scan.beam_centres, atol=CENTRE_TOL_PX)
    alignment = read_json(out / "summary.json")["alignment"]
    assert alignment["method"] == method
    assert alignment["n_measured"] == scan.labels.size
    # each pattern is sampled at its beam: shifts are the true centres minus the reference
    true_shifts = scan.beam_centres.reshape(-1, 2) - np.asarray(alignment["reference"])
    np.testing.assert_allclose(alignment["shift_min_px"], true_shifts.min(0), atol=CENTRE_TOL_PX)
    np.testing.assert_allclose(alignment["shift_max_px"], true_shifts.max(0), atol=CENTRE_TOL_PX)
    labels = np.load(out / "labels.npy")
    assert adjusted_rand_score(scan.labels.ravel(), labels.ravel()) >= 0.95


def test_cli_align_default_method(drifted, tmp_path, run_cli):
    path, scan = drifted
    out = tmp_path / "aligned"
    run = run_cli("cluster", path, "-k", scan.n_regions, "--align", "--out", out, "-q")
    assert run.code == 0, run.err
    check_aligned_run(out, scan, "fit")
    # centres.png: a figure of the measured centres, written beside the other figures
    from PIL import Image

    with Image.open(out / "centres.png") as image:
        width, height = image.size
        colours = len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0))
    assert width >= 300 and height >= 200 and colours > 20  # a map of values, not a blank page
    assert read_json(out / "summary.json")["parameters"]["align"] == "fit"


def test_cli_align_with_a_method(drifted, tmp_path, run_cli):
    path, scan = drifted
    out = tmp_path / "com"
    run = run_cli("cluster", path, "--align", "com", "-k", scan.n_regions, "--out", out, "-q", "--no-figures")
    assert run.code == 0, run.err
    check_aligned_run(out, scan, "com")
    assert not (out / "centres.png").exists()  # --no-figures


def test_cli_without_descan_writes_no_centres(scan_file, tmp_path, run_cli):
    """The default alignment ("auto") measures the descan of this still scan, says so in
    summary.json and corrects nothing; --align none does not measure at all."""
    out = tmp_path / "plain"
    run = run_cli("cluster", scan_file[0], "-k", 4, "--mask", MASK_TEXT, "--out", out, "-q", "--no-figures")
    assert run.code == 0, run.err
    assert not (out / "centres.npy").exists()
    auto = read_json(out / "summary.json")["alignment"]["auto"]
    assert auto["applied"] is False and auto["wander_px"] < auto["threshold_px"]
    off = tmp_path / "off"
    run = run_cli("cluster", scan_file[0], "-k", 4, "--mask", MASK_TEXT, "--align", "none", "--out", off, "-q", "--no-figures")
    assert run.code == 0, run.err
    assert not (off / "centres.npy").exists()
    assert "alignment" not in read_json(off / "summary.json")


def test_cli_align_before_the_file_does_not_swallow_it(drifted, tmp_path, run_cli):
    path, scan = drifted
    out = tmp_path / "first"
    run = run_cli("cluster", "--align", path, "-k", scan.n_regions, "--out", out, "-q", "--no-figures")
    assert run.code == 0, run.err
    check_aligned_run(out, scan, "fit")


def test_cli_align_rejects_an_unknown_method(drifted, tmp_path, run_cli):
    path, scan = drifted
    run = run_cli("cluster", path, "--align", "median", "-k", 2, "--out", tmp_path / "x", "-q")
    assert run.code == 2
    assert run.err.strip() == (
        "gpu4d: error: align must be None, True, False or one of 'com', 'xcorr', 'fit', 'auto'; got 'median'"
    )
    assert not (tmp_path / "x").exists()


# -- KMeans options: --max-iter, --tol ------------------------------------------------------------


def sweep_n_iter(out, ks):
    return [read_json(out / f"k{k:02d}" / "summary.json")["n_iter"] for k in ks]


def test_cli_max_iter_caps_the_iterations(scan_file, tmp_path, run_cli):
    path, _ = scan_file
    ks = [2, 3, 4, 5, 6]
    runs = {}
    for name, extra in (("default", []), ("one", ["--max-iter", "1"])):
        out = tmp_path / name
        run = run_cli("sweep", path, "-k", "2:6", "--mask", MASK_TEXT, "--out", out, "-q", "--no-figures", *extra)
        assert run.code == 0, run.err
        runs[name] = sweep_n_iter(out, ks)
    assert max(runs["default"]) > 1  # this scan needs several Lloyd iterations at some k ...
    assert runs["one"] == [1] * len(ks)  # ... and --max-iter 1 stops every k after one
    assert read_json(tmp_path / "one" / "sweep.json")["parameters"]["max_iter"] == 1

    out = tmp_path / "cluster"
    run = run_cli("cluster", path, "-k", 4, "--mask", MASK_TEXT, "--max-iter", 1, "--out", out, "-q", "--no-figures")
    assert run.code == 0, run.err
    summary = read_json(out / "summary.json")
    assert summary["n_iter"] == 1 and summary["parameters"]["max_iter"] == 1


def test_cli_tol_stops_lloyd_earlier(scan_file, tmp_path, run_cli):
    path, _ = scan_file
    ks = [2, 3, 4, 5, 6]
    iterations = {}
    for tol in ("0", "0.5"):
        out = tmp_path / f"tol{tol}"
        run = run_cli("sweep", path, "-k", "2:6", "--mask", MASK_TEXT, "--tol", tol, "--out", out, "-q", "--no-figures")
        assert run.code == 0, run.err
        assert read_json(out / "sweep.json")["parameters"]["tol"] == float(tol)
        iterations[tol] = sweep_n_iter(out, ks)
    # a tolerance of half the mean feature variance ends some runs before labels stop changing
    assert all(a <= b for a, b in zip(iterations["0.5"], iterations["0"]))
    assert sum(iterations["0.5"]) < sum(iterations["0"])


# -- sweep options: --exact, --components, --sketch-size --------------------------------------


def test_cli_sweep_exact(scan_file, tmp_path, run_cli):
    path, truth = scan_file
    out = tmp_path / "exact"
    run = run_cli("sweep", path, "-k", "3:4", "--mask", MASK_TEXT, "--exact", "--out", out, "-q", "--no-figures")
    assert run.code == 0, run.err
    summary = read_json(out / "sweep.json")
    assert summary["components"]["mode"] == "exact" and summary["parameters"]["exact"] is True
    assert "exact mode: full-dimensional KMeans" in run.out
    labels = np.load(out / "k04" / "labels.npy")
    assert adjusted_rand_score(truth.ravel(), labels.ravel()) >= 0.95


def test_cli_sweep_components(scan_file, tmp_path, run_cli):
    path, _ = scan_file
    out = tmp_path / "c5"
    run = run_cli("sweep", path, "-k", "2:4", "--mask", MASK_TEXT, "--components", "5", "--out", out,
                  "-q", "--no-figures")
    assert run.code == 0, run.err
    components = read_json(out / "sweep.json")["components"]
    assert components["n_components"] == 5 and len(components["explained_variance_ratio"]) == 5
    assert "KMeans atoms on 5 of 48 principal components" in run.out
    bad = run_cli("sweep", path, "-k", "2:4", "--components", "five", "--out", tmp_path / "bad", "-q")
    assert bad.code == 2
    assert bad.err.strip() == "gpu4d: error: --components must be auto or an integer >= 1; got 'five'"


# -- --memory-budget ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hspy_file(tmp_path_factory):
    """region_scan as a .hspy: HDF5 read lazily through RosettaSciIO, so not read cheaply (a
    .npy is memory-mapped and never copied)."""
    import hyperspy.api as hs

    data, truth = region_scan()
    path = tmp_path_factory.mktemp("hspy") / "scan.hspy"
    hs.signals.Signal2D(data).save(path)
    return path, truth


def test_cli_memory_budget_keeps_a_lazily_read_scan_between_passes(hspy_file, tmp_path, run_cli):
    path, truth = hspy_file
    labels = {}
    for budget, kept in (("0", False), ("64M", True)):
        out = tmp_path / f"budget{budget}"
        run = run_cli("sweep", path, "-k", "3:5", "--mask", MASK_TEXT, "--memory-budget", budget,
                      "--out", out, "-q", "--no-figures")
        assert run.code == 0, run.err
        parameters = read_json(out / "sweep.json")["parameters"]
        assert parameters["memory_budget"] == {"0": 0, "64M": 64 * 2**20}[budget]
        assert parameters["raw_patterns_kept_in_memory"] is kept
        labels[budget] = np.load(out / "k04" / "labels.npy")
    np.testing.assert_array_equal(labels["0"], labels["64M"])  # the cache changes where, not what
    assert adjusted_rand_score(truth.ravel(), labels["0"].ravel()) >= 0.95
    bad = run_cli("cluster", path, "-k", "4", "--memory-budget", "lots", "--out", tmp_path / "bad", "-q")
    assert bad.code == 2 and "--memory-budget='lots' should be a number of bytes" in bad.err


def test_memory_budget_values():
    from gpu4d.engine import parse_memory_budget

    assert parse_memory_budget(None) is None
    assert parse_memory_budget("8G") == 8 * 2**30 and parse_memory_budget("1.5GB") == 3 * 2**29
    assert parse_memory_budget("512MiB") == 512 * 2**20 and parse_memory_budget(4096) == 4096
    for bad in ("-1G", "8X", "", True, float("nan")):
        with pytest.raises(gpu4d.InputError, match="should be a number of bytes"):
            parse_memory_budget(bad)
    with pytest.raises(gpu4d.InputError, match="memory_budget="):
        gpu4d.cluster(np.zeros((4, 4, 8, 8), np.uint8), 2, memory_budget="big")


def test_cli_sweep_sketch_size(scan_file, tmp_path, run_cli):
    path, _ = scan_file
    out = tmp_path / "s12"
    run = run_cli("sweep", path, "-k", "2:4", "--mask", MASK_TEXT, "--sketch-size", "12", "--out", out,
                  "-q", "--no-figures")
    assert run.code == 0, run.err
    summary = read_json(out / "sweep.json")
    assert summary["parameters"]["sketch_size"] == 12
    assert summary["components"]["sketch_size"] == 12
    assert len(summary["components"]["explained_variance_ratio_sketch_axes"]) == 12
    assert summary["components"]["n_components"] <= 12


# -- init= (API) -------------------------------------------------------------------------------


RAW = dict(transform="none", align=None)  # the preprocessing the reference below reproduces


def test_init_starts_lloyd_from_the_given_centroids():
    data, _ = region_scan(seed=4)
    mask = np.zeros(data.shape[2:], bool)
    mask[10:14, 10:14] = True
    features = preprocess_reference(data.reshape(-1, *data.shape[2:]), mask, "none", "max").astype(np.float32)
    rng = np.random.default_rng(0)
    start_rows = rng.choice(features.shape[0], 4, replace=False)
    init = np.zeros((4, *data.shape[2:]), np.float32)
    init[:, ~mask] = features[start_rows]
    # Lloyd from init until no label changes (tol 0) reaches the fixed point scikit-learn's
    # Lloyd reaches from the same start (not the one k-means++ would find: init is used)
    ours = gpu4d.cluster(data, 4, mask=mask, init=init, tol=0.0, **RAW)
    theirs = KMeans(4, init=features[start_rows], n_init=1, tol=0.0).fit(features)
    np.testing.assert_array_equal(ours.labels.ravel(), theirs.labels_)
    np.testing.assert_allclose(ours.centroids[:, ~mask], theirs.cluster_centers_, rtol=1e-4, atol=1e-6)
    assert ours.inertia == pytest.approx(theirs.inertia_, rel=1e-4)
    # the identities follow init: cluster i grows from init[i]
    order = np.array([2, 0, 3, 1])
    permuted = gpu4d.cluster(data, 4, mask=mask, init=init[order], **RAW)
    converged = gpu4d.cluster(data, 4, mask=mask, init=init, **RAW)
    np.testing.assert_array_equal(order[permuted.labels], converged.labels)
    wrong_shape = r"init has shape \(3, 24, 24\); expected \(n_clusters, qy, qx\) = \(4, 24, 24\)"
    with pytest.raises(gpu4d.InputError, match=wrong_shape):
        gpu4d.cluster(data, 4, mask=mask, init=init[:3], **RAW)


# -- live options: --no-refine, --max-lag, --spill-dir --------------------------------------------

LIVE_SCAN = (24, 24)


@pytest.fixture(scope="module")
def live_file(tmp_path_factory):
    """A complete Merlin .mib + .hdr of a 24x24 scan (5 regions), as a finished acquisition."""
    scan = make_scan(scan_shape=LIVE_SCAN, detector_shape=(64, 64), seed=3, dtype="uint16")
    folder = tmp_path_factory.mktemp("live")
    frames = scan.data.reshape(-1, 64, 64)
    (folder / "scan.mib").write_bytes(encode_frames(frames))
    (folder / "scan.hdr").write_bytes(acquisition_header(len(frames), scan_shape=LIVE_SCAN))
    return folder / "scan.mib", scan


def run_live(run_cli, source, out, *extra):
    return run_cli("live", source, "-k", 5, "--scan", "24x24", "--out", out, "--init-frames", 128,
                   "--timeout", 2, "-q", "--no-figures", *extra)


def test_cli_live_no_refine_keeps_the_live_result(live_file, tmp_path, run_cli):
    source, scan = live_file
    refined = {}
    for name, extra in (("refined", []), ("live", ["--no-refine"])):
        run = run_live(run_cli, source, tmp_path / name, *extra)
        assert run.code == 0, run.err
        summary = read_json(tmp_path / name / "summary.json")
        refined[name] = summary["live"]["refined"]
        labels = np.load(tmp_path / name / "labels.npy")
        assert adjusted_rand_score(scan.labels.ravel(), labels.ravel()) >= 0.9
    assert refined == {"refined": True, "live": False}


def test_cli_live_max_lag_makes_the_receiver_wait(live_file, tmp_path, run_cli):
    # the file is complete, so the receiver could read it all at once: by default it never
    # waits; with --max-lag 150 it waits for the clustering once it is 150 frames ahead (it
    # takes one receive batch at a time, and a whole one when the clustering has caught up)
    source, _ = live_file
    waits = {}
    for name, extra in (("default", []), ("lag", ["--max-lag", 150])):
        run = run_live(run_cli, source, tmp_path / name, *extra)
        assert run.code == 0, run.err
        progress = read_json(tmp_path / name / "progress.json")
        assert f"largest lag {progress['max_lag_frames_seen']} frames" in run.out
        waits[name] = progress["receiver_waits"]
        assert progress["frames_processed"] == LIVE_SCAN[0] * LIVE_SCAN[1]
    assert read_json(tmp_path / "lag" / "progress.json")["max_lag_frames_allowed"] == 150
    assert waits["default"] == 0 and waits["lag"] >= 1


def test_cli_live_spill_dir_is_left_clean(live_file, tmp_path, run_cli):
    # a 24x24 scan fits in memory, so the frames stay there: the CLI has no knob to force a spill
    # (the API's max_in_memory_bytes; see test_live_spills_frames_to_the_spill_dir), so this
    # checks that the option is accepted and leaves nothing behind
    source, _ = live_file
    spill = tmp_path / "spill"
    spill.mkdir()
    run = run_live(run_cli, source, tmp_path / "out", "--spill-dir", spill)
    assert run.code == 0, run.err
    assert list(spill.iterdir()) == []
    assert read_json(tmp_path / "out" / "summary.json")["live"]["frames_on_disk"] is False


def test_live_spills_frames_to_the_spill_dir(live_file, tmp_path):
    from gpu4d.live import LiveRun

    source, scan = live_file
    spill = tmp_path / "spill"
    spill.mkdir()
    seen = []

    def look(run, progress):  # while the run goes on, its frames lie in a folder inside spill
        seen.extend(p.name for p in spill.iterdir())

    run = LiveRun(source, 5, LIVE_SCAN, out=tmp_path / "out", figures=False, timeout_s=2,
                  callback=look, init_frames=128, spill_dir=spill, max_in_memory_bytes=1)
    outcome = run.run()
    assert outcome.status == "complete"
    assert outcome.result.extra["live"]["frames_on_disk"] is True
    assert any(name.startswith("gpu4d-live-") for name in seen)
    assert list(spill.iterdir()) == []  # removed at the end
    assert adjusted_rand_score(scan.labels.ravel(), outcome.result.labels.ravel()) >= 0.9
