"""The ``gpu4d`` command line: cluster, info, demo (in-process through ``gpu4d.cli.main``), and
one run of the installed console script."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import hyperspy.api as hs
import numpy as np
import pytest
from matplotlib.image import imread

import gpu4d
from gpu4d.backend import gpu_problem

from .helpers import run_main

SUMMARY_KEYS = {
    "parameters",
    "n_clusters",
    "inertia",
    "n_iter",
    "cluster_sizes",
    "mask",
    "timings_s",
    "versions",
}
CLUSTER_OPTIONS = {
    "mask": "auto",
    "normalize": "l2",
    "transform": "sqrt",
    "batch_size": 4,
    "random_state": 3,
    "n_init": 2,
}


@pytest.fixture(scope="module")
def blo_run(tmp_path_factory, blo_file, file_hash):
    """One full ``gpu4d cluster`` run on test1.blo, figures included."""
    out = tmp_path_factory.mktemp("cli") / "results"
    before = file_hash(blo_file)
    argv = [
        "cluster", blo_file, "-k", 2, "--mask", "auto", "--normalize", "l2", "--transform", "sqrt",
        "--batch-size", 4, "--seed", 3, "--n-init", 2, "--out", out, "-q",
    ]
    code, stdout, stderr = run_main(argv)
    return {
        "code": code, "out": out, "stdout": stdout, "stderr": stderr,
        "hash_before": before, "hash_after": file_hash(blo_file),
    }


def test_cluster_exits_0_and_reports(blo_run, blo_file):
    assert blo_run["code"] == 0, blo_run["stderr"]
    assert "Traceback" not in blo_run["stderr"]
    lines = blo_run["stdout"].splitlines()
    assert lines[0] == f"{blo_file}: 3x2 scan, k = 2"
    assert any(line.strip().startswith("results") and str(blo_run["out"]) in line for line in lines)


def test_cluster_does_not_modify_the_input(blo_run):
    assert blo_run["hash_after"] == blo_run["hash_before"]


def test_cluster_writes_the_arrays(blo_run, blo_file):
    out = blo_run["out"]
    labels = np.load(out / "labels.npy")
    centroids = np.load(out / "centroids.npy")
    means = np.load(out / "mean_patterns.npy")
    assert labels.shape == (3, 2) and labels.dtype.kind == "i"
    assert set(np.unique(labels)) <= {0, 1}
    assert centroids.shape == means.shape == (2, 144, 144)
    raw = hs.load(str(blo_file)).data.reshape(6, 144, 144).astype(np.float64)
    # the mean patterns are of the patterns as clustered: the detector's dark level subtracted
    offset = json.loads((out / "summary.json").read_text())["mask"]["detector_offset"]
    raw = np.maximum(raw - offset, 0.0)
    for k in range(2):
        members = raw[labels.ravel() == k]
        if len(members):
            np.testing.assert_allclose(means[k], members.mean(axis=0), rtol=1e-5, atol=1e-4)
    # the CLI options reach gpu4d.cluster: the API with the same options gives the same result
    api = gpu4d.cluster(blo_file, 2, **CLUSTER_OPTIONS)
    np.testing.assert_array_equal(labels, api.labels)
    np.testing.assert_allclose(centroids, api.centroids, rtol=1e-5, atol=1e-7)


def test_summary_json(blo_run):
    out = blo_run["out"]
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    parameters = summary["parameters"]
    for key, value in CLUSTER_OPTIONS.items():
        assert parameters[key] == value, key
    assert parameters["n_clusters"] == summary["n_clusters"] == 2
    labels = np.load(out / "labels.npy")
    assert summary["cluster_sizes"] == np.bincount(labels.ravel(), minlength=2).tolist()
    assert summary["inertia"] >= 0 and summary["n_iter"] >= 1
    assert summary["mask"]["kind"] == "auto"
    assert summary["mask"]["n_masked_pixels"] == int(np.load(out / "mask.npy").sum()) > 0
    assert {"open", "preprocess", "kmeans"} <= set(summary["timings_s"])
    assert all(v >= 0 for v in summary["timings_s"].values())
    assert summary["versions"]["gpu4d"] == gpu4d.__version__
    assert summary["versions"]["numpy"] == np.__version__
    assert summary["backend"] == "cpu"


def test_clusters_hspy_keeps_calibrations(blo_run, blo_file):
    out = blo_run["out"]
    source = hs.load(str(blo_file))
    clusters = hs.load(str(out / "clusters.hspy"))
    np.testing.assert_array_equal(clusters.data, np.load(out / "centroids.npy"))
    # centroids carry the detector calibration, labels the scan calibration
    for saved, original in zip(clusters.axes_manager.signal_axes, source.axes_manager.signal_axes):
        assert (saved.size, saved.units) == (original.size, original.units)
        assert saved.scale == pytest.approx(original.scale)
        assert saved.offset == pytest.approx(original.offset)
    labels = clusters.metadata.gpu4d.labels
    np.testing.assert_array_equal(labels.data, np.load(out / "labels.npy"))
    for saved, original in zip(labels.axes_manager.signal_axes, source.axes_manager.navigation_axes):
        assert (saved.size, saved.units) == (original.size, original.units)
        assert saved.scale == pytest.approx(original.scale) == pytest.approx(12.8)
    means = clusters.metadata.gpu4d.mean_patterns
    np.testing.assert_array_equal(means.data, np.load(out / "mean_patterns.npy"))


def colour_share(image, rgba) -> float:
    """Share of the image's pixels within 2/255 of the colour ``rgba`` (RGB compared)."""
    rgb = image[..., :3].astype(np.float64)
    if image.dtype == np.uint8:
        rgb = rgb / 255
    return float((np.abs(rgb - np.asarray(rgba[:3])) <= 2 / 255).all(axis=-1).mean())


def test_label_map_figure_shows_each_label_in_its_colour(blo_run):
    from gpu4d.figures import label_colours

    image = imread(blo_run["out"] / "labels.png")
    assert image.ndim == 3 and image.shape[0] > 150 and image.shape[1] > 150
    labels = np.load(blo_run["out"] / "labels.npy")
    colours = label_colours(2)
    for label in range(2):
        share = colour_share(image, colours[label])
        if (labels == label).any():  # each of the 6 scan cells covers a visible patch
            assert share > 0.01 * (labels == label).sum(), (label, share)
        else:
            assert share < 0.001, (label, share)


def test_centroid_figure_is_an_image_of_the_patterns(blo_run):
    image = imread(blo_run["out"] / "centroids.png")
    assert image.ndim == 3 and image.shape[0] > 150 and image.shape[1] > 150
    # the patterns are drawn with a colour map: many distinct colours, not a blank canvas
    assert len(np.unique(image[..., :3].reshape(-1, 3), axis=0)) > 50


def test_overwrite_replaces(run_cli, tmp_path, two_phase):
    data = tmp_path / "scan.npy"
    np.save(data, two_phase.data)
    out = tmp_path / "results"
    first = run_cli("cluster", data, "-k", 2, "--out", out, "--no-figures", "-q")
    assert first.code == 0, first.err
    (out / "centres.npy").write_bytes(b"from an earlier aligned run")  # a file gpu4d writes
    old_summary = (out / "summary.json").read_text()

    refused = run_cli("cluster", data, "-k", 3, "--out", out, "--no-figures", "-q")
    assert refused.code == 2
    assert refused.err.strip().splitlines() == [
        f"gpu4d: error: results folder '{out}' already exists; pass --overwrite to replace it"
    ]
    assert (out / "summary.json").read_text() == old_summary

    second = run_cli("cluster", data, "-k", 3, "--out", out, "--no-figures", "-q", "--overwrite")
    assert second.code == 0, second.err
    assert not (out / "centres.npy").exists(), "--overwrite replaces the folder, it does not merge"
    assert json.loads((out / "summary.json").read_text())["n_clusters"] == 3
    assert np.load(out / "centroids.npy").shape == (3, 24, 24)
    assert not (out / "labels.png").exists()  # --no-figures
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results", "scan.npy"]  # no temporaries


def test_info(run_cli):
    import numba

    run = run_cli("info")
    assert run.code == 0
    assert "Traceback" not in run.err
    text = run.out
    assert re.search(rf"^\s+gpu4d\s+{re.escape(gpu4d.__version__)}$", text, re.M)
    assert re.search(rf"^\s+numpy\s+{re.escape(np.__version__)}$", text, re.M)
    assert re.search(rf"^\s+numba\s+{re.escape(numba.__version__)}$", text, re.M)
    assert re.search(r"^\s+cpu\s+usable", text, re.M)
    problem = gpu_problem()
    if problem is None:
        assert re.search(r"^\s+gpu\s+usable", text, re.M)
    else:
        gpu_line = re.search(r"^\s+gpu\s+(.*)$", text, re.M).group(1)
        assert gpu_line.startswith(f"not usable: {problem}")
        assert "pip install 'gpu4d[gpu]'" in gpu_line
        assert re.search(r"^\s+auto\s+cpu$", text, re.M)


# -- demo ---------------------------------------------------------------------------------------


@pytest.fixture
def small_demo(monkeypatch):
    """The demo on a 12x12 scan of 32x32 patterns, without figures, to keep the test fast."""
    synthetic = pytest.importorskip(
        "gpu4d.synthetic", reason="gpu4d.synthetic (the demo's scan generator) is not importable yet"
    )
    import gpu4d.outputs

    make_scan = synthetic.make_scan

    def small_scan(*args, **kwargs):
        kwargs.update(scan_shape=(12, 12), detector_shape=(32, 32))
        return make_scan(*args, **kwargs)

    monkeypatch.setattr(synthetic, "make_scan", small_scan)
    monkeypatch.setattr(gpu4d.outputs, "write_figures", lambda result, folder: None)


def _ari(stdout: str) -> float:
    match = re.search(r"^\s*ARI against the ground truth: (-?\d+\.\d+) \(\d+ regions\)$", stdout, re.M)
    assert match, stdout
    return float(match.group(1))


def test_demo_prints_ari_and_reruns_into_its_folder(run_cli, small_demo, tmp_path):
    out = tmp_path / "demo"
    first = run_cli("demo", "--out", out, "--backend", "cpu")
    assert first.code == 0, first.err
    ari = _ari(first.out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["demo"]["ari_vs_truth"] == pytest.approx(ari, abs=5e-4)
    assert ari >= 0.9  # the demo's regions are well separated
    assert summary["scan_shape"] == [12, 12]

    (out / "centres.npy").write_bytes(b"a file gpu4d writes, from an earlier run")
    again = run_cli("demo", "--out", out, "--backend", "cpu", "--seed", 8)
    assert again.code == 0, again.err
    _ari(again.out)
    assert not (out / "centres.npy").exists()
    assert json.loads((out / "summary.json").read_text())["demo"]["seed"] == 8


@pytest.mark.parametrize("contents", ["foreign files", "a cluster result"])
def test_demo_refuses_a_folder_it_did_not_write(run_cli, small_demo, tmp_path, contents):
    out = tmp_path / "precious"
    out.mkdir()
    if contents == "foreign files":
        (out / "thesis.tex").write_text("do not delete")
    else:
        (out / "summary.json").write_text(json.dumps({"n_clusters": 3, "parameters": {}}))
    before = {p.name: p.read_text() for p in out.iterdir()}
    run = run_cli("demo", "--out", out, "--backend", "cpu")
    assert run.code == 2
    assert "Traceback" not in run.err
    assert run.err.strip().splitlines() == [
        f"gpu4d: error: results folder '{out}' already exists and is not the output of an "
        "earlier gpu4d demo; choose another --out"
    ]
    assert {p.name: p.read_text() for p in out.iterdir()} == before


# -- the installed console script ---------------------------------------------------------------


def test_console_script_entry_point(tmp_path):
    """One real process: the ``gpu4d`` script runs main, exits 2 and prints one line."""
    script = Path(sys.executable).with_name("gpu4d")
    if not script.exists():
        pytest.skip(f"the gpu4d console script is not installed beside {sys.executable}")
    missing = tmp_path / "missing.blo"
    proc = subprocess.run(
        [str(script), "cluster", str(missing), "-k", "2", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"gpu4d: error: {missing}: no such file"]
    assert proc.stdout == ""
    assert not (tmp_path / "out").exists()


def test_console_script_success_writes_everything_before_exiting(tmp_path):
    """The script leaves through ``os._exit`` (see ``gpu4d.cli.run``): its piped output and
    its result files must be complete all the same."""
    script = Path(sys.executable).with_name("gpu4d")
    if not script.exists():
        pytest.skip(f"the gpu4d console script is not installed beside {sys.executable}")
    data = np.random.default_rng(0).poisson(2.0, (6, 7, 16, 16)).astype(np.uint16)
    np.save(tmp_path / "scan.npy", data)
    proc = subprocess.run(
        [str(script), "sweep", str(tmp_path / "scan.npy"), "-k", "2:3", "--no-figures",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().splitlines()[-1] == f"  results  {tmp_path / 'out'}"
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["ks"] == [2, 3]
