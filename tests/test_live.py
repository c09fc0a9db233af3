"""Live clustering: the mini-batch update against scikit-learn, stable label identities, the
acquisition loop end to end (iterable, LiberTEM-live's Merlin simulator through the CLI) and its
faults (disconnect, malformed stream, slow consumer, Ctrl-C)."""

from __future__ import annotations

import json
import os
import re
import threading
import time

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.cluster import MiniBatchKMeans as SkMiniBatchKMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

import gpu4d
from gpu4d.cli import main
from gpu4d.live import (
    EXIT_ERROR,
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    LiveClusterer,
    LiveRun,
    match_centroids,
)
from gpu4d.kmeans.minibatch import MiniBatchKMeans
from gpu4d.synthetic import make_scan

from .mib_writer import acquisition_header, encode_frames, growing_mib

SCAN = (24, 24)
N = SCAN[0] * SCAN[1]


@pytest.fixture(autouse=True)
def _one_thread_pools():
    """OpenMP/BLAS threads that spin-wait make scikit-learn's KMeans 20x slower on a busy
    2-core CI machine; the results do not depend on the thread count."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def scan():
    """A 24x24 scan of 64x64 uint16 patterns, 5 regions (4 grains and a twin lamella)."""
    return make_scan(scan_shape=SCAN, detector_shape=(64, 64), seed=3, dtype="uint16")


def frames_of(scan):
    return scan.data.reshape(-1, *scan.data.shape[2:])


def ari(a, b):
    return adjusted_rand_score(np.ravel(a), np.ravel(b))


# -- the mini-batch update ------------------------------------------------------------------


def test_minibatch_update_equals_sklearn_partial_fit():
    x, _ = make_blobs(600, n_features=20, centers=4, cluster_std=2.0, random_state=1)
    x = x.astype(np.float32)
    init = x[[0, 1, 2, 3]].copy()
    ours = MiniBatchKMeans(4).set_centers(init)
    theirs = SkMiniBatchKMeans(4, init=init, n_init=1, batch_size=50, reassignment_ratio=0.0,
                               random_state=0)
    assigned = []
    for start in range(0, 600, 50):
        batch = x[start : start + 50]
        labels, _ = ours.partial_fit(batch)
        theirs.partial_fit(batch)
        assigned.append(np.asarray(labels))
        np.testing.assert_allclose(ours.cluster_centers_, theirs.cluster_centers_, rtol=1e-4, atol=1e-4)
    # each centre's count is the number of rows assigned to it so far (no reassignment)
    np.testing.assert_array_equal(ours.counts_, np.bincount(np.concatenate(assigned), minlength=4))
    np.testing.assert_array_equal(ours.predict(x), theirs.predict(x))


def test_minibatch_update_accumulated_in_parts_equals_one_step():
    x, _ = make_blobs(300, n_features=8, centers=3, random_state=2)
    x = x.astype(np.float32)
    whole = MiniBatchKMeans(3).set_centers(x[:3], counts=[5, 6, 7])
    parts = MiniBatchKMeans(3).set_centers(x[:3], counts=[5, 6, 7])
    whole.partial_fit(x)
    labels = parts.predict(x)
    acc = [parts.accumulate(x[a : a + 7], labels[a : a + 7]) for a in range(0, 300, 7)]
    parts.apply(sum(s for s, _ in acc), sum(c for _, c in acc))
    np.testing.assert_allclose(parts.cluster_centers_, whole.cluster_centers_, rtol=1e-5, atol=1e-5)


def test_minibatch_kmeans_finds_well_separated_clusters_like_kmeans():
    x, truth = make_blobs(3000, n_features=30, centers=5, cluster_std=1.0, random_state=3)
    x = x.astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    full = KMeans(5, n_init=3, random_state=0).fit(x)
    ours = MiniBatchKMeans(5).set_centers(full.cluster_centers_ + 2.0)  # a rough start
    for start in range(0, len(x), 256):
        ours.partial_fit(x[order[start : start + 256]])
    labels = ours.predict(x)
    assert ari(labels, truth) >= 0.99
    assert ari(labels, full.labels_) >= 0.99


# -- stable label identities ------------------------------------------------------------------


def test_match_centroids_recovers_a_permutation():
    rng = np.random.default_rng(0)
    old = rng.normal(size=(6, 50)).astype(np.float32)
    perm = np.array([3, 0, 5, 1, 4, 2])
    new = old[perm] + 0.05 * rng.normal(size=old.shape).astype(np.float32)
    order = match_centroids(old, new)
    np.testing.assert_array_equal(new[order].argmax(1), old.argmax(1))
    np.testing.assert_array_equal(perm[order], np.arange(6))


def test_labels_keep_their_identity_across_updates_reseeds_and_refinement(scan):
    frames = frames_of(scan)
    live = LiveClusterer(scan.n_regions, SCAN, init_frames=128, batch_size=64, random_state=1)
    live.feed(frames[:300])
    before = live.centroids.copy()
    # after an update, label i still means region i: centroid i moved least from centroid i
    # (the matching itself: test_match_centroids_recovers_a_permutation)
    live.feed(frames[300:364])
    after = live.centroids
    distances = ((before[:, None] - after[None]) ** 2).sum(axis=(2, 3))
    np.testing.assert_array_equal(distances.argmin(axis=1), np.arange(5))
    live.feed(frames[364:])
    live.process()
    live.reseed()
    live.relabel()
    labels = live.labels
    assert ari(labels, scan.labels) >= 0.9
    # further re-seeds (each draws other k-means++ starts) match their centroids to the old ones
    for _ in range(2):
        live.reseed()
        live.relabel()
        assert (live.labels == labels).mean() >= 0.98
    result = live.finish()
    assert (result.labels == live.labels).mean() >= 0.95  # the refinement keeps them too
    assert ari(result.labels, scan.labels) >= 0.9


def test_a_pedestal_is_found_in_the_first_frames_and_subtracted(scan):
    """Frames with a detector's dark level give the live map (and the refined one) of the
    frames without it: the offset is found in the initial buffer as gpu4d.cluster finds it."""
    frames = frames_of(scan)
    maps = {}
    for pedestal in (0, 100):
        with LiveClusterer(scan.n_regions, SCAN, init_frames=128, batch_size=64, random_state=1) as live:
            live.feed(frames + np.uint16(pedestal))
            live.process()
            live.relabel()
            assert live.mask.detector_offset == pedestal
            maps[pedestal] = (live.labels.copy(), live.finish())
    np.testing.assert_array_equal(maps[100][0], maps[0][0])
    np.testing.assert_array_equal(maps[100][1].labels, maps[0][1].labels)
    assert maps[100][1].mask.detector_offset == 100


# -- end to end ---------------------------------------------------------------------------------


def test_iterable_source_end_to_end(scan, tmp_path):
    frames = frames_of(scan)
    snapshots = []

    def batches():
        for start in range(0, N, 40):
            yield frames[start : start + 40]

    def watch(run, progress):
        snapshots.append(run.clusterer.labels)

    run = LiveRun(batches(), scan.n_regions, SCAN, out=tmp_path / "out", figures=False,
                  snapshot_every_s=0.2, init_frames=128, batch_size=64, callback=watch)
    outcome = run.run()
    assert outcome.status == "complete" and outcome.exit_code == 0 and outcome.message is None
    result = outcome.result
    assert result.labels.shape == SCAN and (result.labels >= 0).all()
    assert ari(result.labels, scan.labels) >= 0.9
    reference = gpu4d.cluster(scan.data, scan.n_regions)
    assert ari(result.labels, reference.labels) >= 0.9
    out = tmp_path / "out"
    for name in ("labels.npy", "centroids.npy", "mean_patterns.npy", "summary.json", "progress.json"):
        assert (out / name).is_file(), name
    progress = json.loads((out / "progress.json").read_text())
    assert progress["frames_received"] == progress["frames_processed"] == N
    assert progress["status"] == "complete" and progress["exit_code"] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["live"]["refined"] and summary["live"]["frames_received"] == N
    np.testing.assert_array_equal(np.load(out / "labels.npy"), result.labels)
    assert any((s == -1).any() and (s >= 0).any() for s in snapshots)  # partial maps on the way


def test_feeding_frames_one_by_one_with_the_frames_on_disk(scan, tmp_path):
    frames = frames_of(scan)
    with LiveClusterer(scan.n_regions, SCAN, init_frames=100, batch_size=50, spill_dir=tmp_path,
                       max_in_memory_bytes=1) as live:
        for frame in frames:
            live.feed(frame)
            assert live.frames_received - live.frames_processed < 100
        assert live.labels.min() >= 0
        assert live.frames.filename.startswith(str(tmp_path))  # a memory map in spill_dir
        result = live.finish()
    assert list(tmp_path.iterdir()) == []  # its folder is gone with the clusterer
    assert ari(result.labels, scan.labels) >= 0.9


def test_a_mib_file_still_being_written(scan, tmp_path):
    frames = frames_of(scan)
    path = tmp_path / "growing.mib"
    with growing_mib(path, frames):
        outcome = LiveRun(path, scan.n_regions, SCAN, init_frames=128, timeout_s=5).run()
    assert outcome.status == "complete" and outcome.progress["frames_received"] == N
    assert ari(outcome.result.labels, scan.labels) >= 0.9


# -- against LiberTEM-live's Merlin simulator, through the CLI --------------------------------

# The simulator opens the .mib once per frame and never closes it: its warnings, not ours.
ignore_sim_leaks = pytest.mark.filterwarnings(
    "ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)


def write_mib(folder, frames, scan_shape):
    mib = folder / "scan.mib"
    mib.write_bytes(encode_frames(frames, counter_depth=12))
    hdr = mib.with_suffix(".hdr")
    hdr.write_bytes(acquisition_header(len(frames), counter_depth=12, scan_shape=scan_shape))
    return hdr


@ignore_sim_leaks
def test_cli_live_against_the_merlin_simulator(scan, tmp_path, merlin_sim, capsys):
    port = merlin_sim(write_mib(tmp_path, frames_of(scan), SCAN))
    out = tmp_path / "out"
    code = main(["live", f"merlin://127.0.0.1:{port}", "-k", str(scan.n_regions), "--scan", "24x24",
                 "--out", str(out), "--init-frames", "128", "--snapshot-every", "0.5", "-q"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "576 of 576 frames received" in printed.out
    labels = np.load(out / "labels.npy")
    assert ari(labels, scan.labels) >= 0.9
    progress = json.loads((out / "progress.json").read_text())
    assert progress["frames_received"] == N and progress["status"] == "complete"
    for name in ("labels.png", "centroids.png", "mean_patterns.png", "clusters.hspy"):
        assert (out / name).is_file(), name


# -- faults, with a Merlin data port of our own ---------------------------------------------------


def mpx(payload: bytes) -> bytes:
    return b"MPX,%010d," % (len(payload) + 1) + payload


def messages(frames, first_sequence=1):
    records = encode_frames(frames, first_sequence=first_sequence)
    size = len(records) // len(frames)
    return b"".join(mpx(records[i : i + size]) for i in range(0, len(records), size))




def run_cli(port, out, capsys, *extra):
    code = main(["live", f"merlin://127.0.0.1:{port}", "-k", "5", "--scan", "24x24", "--out", str(out),
                 "--init-frames", "128", "--timeout", "3", "--no-figures", "-q", *extra])
    return code, capsys.readouterr()


def test_a_disconnect_mid_scan_saves_the_partial_result_and_exits_3(scan, tmp_path, peer, capsys):
    frames = frames_of(scan)
    port = peer([mpx(acquisition_header(N, scan_shape=SCAN)) + messages(frames[:300])])
    out = tmp_path / "out"
    code, printed = run_cli(port, out, capsys)
    assert code == EXIT_INCOMPLETE == 3
    assert "after 300 of 576 frames" in printed.err and len(printed.err.strip().splitlines()) == 1
    progress = json.loads((out / "progress.json").read_text())
    assert progress["frames_received"] == progress["frames_processed"] == 300
    assert progress["status"] == "incomplete" and progress["exit_code"] == 3
    labels = np.load(out / "labels.npy")
    assert (labels.ravel()[:300] >= 0).all() and (labels.ravel()[300:] == -1).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["live"]["frames_received"] == 300 and not summary["live"]["complete"]


def test_a_malformed_frame_is_named_saves_what_arrived_and_exits_2(scan, tmp_path, peer, capsys):
    frames = frames_of(scan)
    bad = mpx(b"MQ2" + encode_frames(frames[300:301], first_sequence=301)[3:])
    port = peer([mpx(acquisition_header(N)) + messages(frames[:300]) + bad + messages(frames[301:], 302)],
                hold_s=5)
    out = tmp_path / "out"
    code, printed = run_cli(port, out, capsys)
    assert code == EXIT_ERROR == 2
    err = printed.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gpu4d: error: merlin://127.0.0.1:")
    assert "frame 300: frame header should start with b'MQ1" in err[0]
    progress = json.loads((out / "progress.json").read_text())
    assert progress["frames_received"] == 300 and progress["status"] == "error"
    assert "frame 300" in progress["message"]
    assert (np.load(out / "labels.npy") >= 0).sum() == 300


def test_a_slow_consumer_buffers_without_dropping_and_reports_lag(scan, tmp_path):
    frames = frames_of(scan)
    seen = []

    def slow(run, progress):
        seen.append(progress)
        time.sleep(0.03)

    run = LiveRun(iter(np.array_split(frames, N // 16)), scan.n_regions, SCAN, out=tmp_path / "out",
                  figures=False, refine=False, init_frames=64, batch_size=32, max_lag_frames=100,
                  snapshot_every_s=0.1, callback=slow)
    outcome = run.run()
    assert outcome.status == "complete"
    p = outcome.progress
    assert p["frames_received"] == p["frames_processed"] == N  # nothing dropped
    assert 0 < p["max_lag_frames_seen"] <= 100 and p["receiver_waits"] > 0
    assert max(s["lag_frames"] for s in seen) > 0
    on_disk = json.loads((tmp_path / "out" / "progress.json").read_text())
    assert on_disk["max_lag_frames_allowed"] == 100 and on_disk["receiver_waits"] > 0
    assert ari(outcome.result.labels, scan.labels) >= 0.8  # live labels, no refinement


def test_ctrl_c_saves_the_partial_result_and_exits_130(scan, tmp_path):
    frames = frames_of(scan)

    interrupted = threading.Event()

    def held_source():  # frames 320 on arrive only after the Ctrl-C: some are always missing
        for start in range(0, N, 16):
            if start >= 320:
                interrupted.wait(30)
            yield frames[start : start + 16]

    def interrupt(run, progress):
        if progress["frames_processed"] >= 160:
            interrupted.set()
            raise KeyboardInterrupt

    run = LiveRun(held_source(), scan.n_regions, SCAN, out=tmp_path / "out", figures=False,
                  init_frames=128, batch_size=32, callback=interrupt)
    outcome = run.run()
    assert outcome.status == "interrupted" and outcome.exit_code == EXIT_INTERRUPTED == 130
    received = outcome.progress["frames_received"]
    assert 160 <= received < N and outcome.progress["frames_processed"] == received
    labels = np.load(tmp_path / "out" / "labels.npy")
    assert (labels >= 0).sum() == received and (labels == -1).sum() == N - received
    assert json.loads((tmp_path / "out" / "progress.json").read_text())["exit_code"] == 130


def test_arguments_are_checked_before_anything_starts(tmp_path):
    with pytest.raises(gpu4d.InputError, match=re.escape("scan_shape=(0, 4) should be (ny, nx), two integers >= 1.")):
        LiveClusterer(3, (0, 4))
    with pytest.raises(gpu4d.InputError, match="n_clusters=20 should be <= the number of frames 16"):
        LiveClusterer(20, (4, 4))
    with pytest.raises(gpu4d.InputError, match="normalize must be one of none, max, l2, sum; got 'bogus'"):
        LiveClusterer(3, (4, 4), normalize="bogus")
    (tmp_path / "taken").mkdir()
    with pytest.raises(gpu4d.OutputError, match="already exists"):
        LiveRun([np.zeros((4, 4))], 2, (2, 2), out=tmp_path / "taken").run()


# -- the acceptance run: a 64x64 scan of 128x128 frames through the Merlin simulator ----------

slow = pytest.mark.skipif(
    not os.environ.get("GPU4D_SLOW_TESTS"), reason="slow (~1 min); set GPU4D_SLOW_TESTS=1"
)


@slow
@pytest.mark.slow
@ignore_sim_leaks
@pytest.mark.parametrize("drift,align,target", [(0.0, False, 0.9), (1.5, True, 0.95)])
def test_acceptance_64x64_scan_through_the_merlin_simulator(
    tmp_path, merlin_sim, capsys, drift, align, target
):
    held_out = make_scan(scan_shape=(64, 64), detector_shape=(128, 128), drift_px=drift, seed=8,
                         dtype="uint16")
    port = merlin_sim(write_mib(tmp_path, frames_of(held_out), (64, 64)))
    out = tmp_path / "out"
    args = ["live", f"merlin://127.0.0.1:{port}", "-k", "5", "--scan", "64x64", "--out", str(out), "-q"]
    code = main(args + (["--align"] if align else []))
    printed = capsys.readouterr()
    assert code == 0, printed.err
    progress = json.loads((out / "progress.json").read_text())
    assert progress["frames_received"] == 64 * 64
    score = ari(np.load(out / "labels.npy"), held_out.labels)
    print(f"acceptance drift={drift} align={align}: ARI {score:.4f}, {progress['rate_fps']:.0f} frames/s")
    assert score >= target
