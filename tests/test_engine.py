"""The streaming engine: every pass gives the same result for any partitioning (against numpy
float64 references), and the Dask executor gives exactly the inline executor's result over the
same partitions, also when a worker dies in a pass."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import gpu4d
from gpu4d.backend import get_backend
from gpu4d.io.dataset import open_dataset
from gpu4d.engine import InlineExecutor, RowRecipe
from gpu4d.engine.passes import BeamCentres, Distances, LabelSums, Project, TransposedProduct
from gpu4d.errors import InputError
from gpu4d.kernels import pixel_math
from gpu4d.synthetic import make_scan

from .helpers import run_main
from .reference import preprocess_reference

distributed = pytest.importorskip("distributed")

SHAPE = (18, 23)  # 414 patterns: partitions of 1 row, 7, 64, 257 and all of them
DETECTOR = (32, 32)
PARTITION_SIZES = (7, 64, 257, SHAPE[0] * SHAPE[1])


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A small uint16 scan on disk, its kept pixels (a disc masked) and sub-pixel shifts."""
    data = make_scan(SHAPE, DETECTOR, dtype="uint16", seed=11).data
    path = tmp_path_factory.mktemp("engine") / "scan.npy"
    np.save(path, data)
    n = SHAPE[0] * SHAPE[1]
    yy, xx = np.indices(DETECTOR)
    masked = (yy - 16) ** 2 + (xx - 16) ** 2 <= 9
    pixels = tuple(a.astype(np.int32) for a in np.nonzero(~masked))
    shifts = np.random.default_rng(2).uniform(-1.5, 1.5, (n, 2)).astype(np.float32)
    return path, data.reshape(n, *DETECTOR), masked, pixels, shifts


@pytest.fixture(scope="module")
def recipe(scan):
    _, _, _, pixels, shifts = scan
    return RowRecipe(pixels[0], pixels[1], pixel_math.TRANSFORM_SQRT, pixel_math.NORM_MAX, shifts)


@pytest.fixture(scope="module")
def features(scan):
    _, raw, masked, _, shifts = scan
    return preprocess_reference(raw, masked, "sqrt", "max", shifts)


@pytest.fixture(scope="module")
def passes(scan, features):
    """One pass of every kind, with its numpy float64 reference result."""
    _, raw, _, _, shifts = scan
    n, m = features.shape
    rng = np.random.default_rng(4)
    matrix = rng.standard_normal((m, 5)).astype(np.float32)
    sample = np.sort(rng.choice(n, 150, replace=False))
    grid = (np.arange(0, SHAPE[0], 5)[:, None] * SHAPE[1] + np.arange(0, SHAPE[1], 3)[None, :]).ravel()
    q = rng.standard_normal((sample.size, 6)).astype(np.float32)
    labels = rng.integers(0, 4, n)
    columns = np.stack([labels, 4 + rng.integers(0, 3, n)], axis=1).astype(np.int32)
    centroids = features[rng.choice(n, 3, replace=False)]
    from .reference import shift_patterns

    aligned = shift_patterns(raw, shifts).reshape(n, -1)
    one_hot = np.zeros((n, 7))
    one_hot[np.arange(n), columns[:, 0]] = 1
    one_hot[np.arange(n), columns[:, 1]] = 1
    distances = np.sqrt(((features[:, None, :] - centroids[None]) ** 2).sum(axis=2))
    return {
        "project": (Project(matrix, "project"), features @ matrix),
        "project sample": (Project(matrix, "project", sample), features[sample] @ matrix),
        "project grid": (Project(matrix, "project", grid), features[grid] @ matrix),
        "features": (Project(None, "features", n_features=m), features),
        "transposed product": (TransposedProduct(q, "product", sample), features[sample].T @ q),
        "label sums": (
            LabelSums(columns, 7, "sums"),
            (one_hot.T @ features, (features**2).sum(axis=0), one_hot.T @ aligned),
        ),
        "distances": (Distances(centroids), distances),
    }


def _close(result, expected, rtol):
    if isinstance(expected, tuple):
        for r, e in zip(result, expected):
            _close(r, e, rtol)
        return
    np.testing.assert_allclose(np.asarray(result, np.float64), expected, rtol=rtol, atol=rtol * np.abs(expected).max())


@pytest.mark.parametrize("partition_size", PARTITION_SIZES)
def test_every_pass_matches_numpy_for_any_partitioning(scan, recipe, passes, partition_size):
    """float32 kernels and products against float64 numpy: 2e-5 of the largest value."""
    path = scan[0]
    executor = InlineExecutor(open_dataset(str(path)), get_backend("cpu"), partition_size)
    for name, (pass_, expected) in passes.items():
        _close(executor.run(pass_, recipe), expected, 2e-5)


def test_beam_centres_do_not_depend_on_the_partitioning(scan):
    path = scan[0]
    centres_pass = BeamCentres("com", (16.0, 16.0), 3.0, 10.0)
    results = [
        InlineExecutor(open_dataset(str(path)), get_backend("cpu"), size).run(centres_pass) for size in PARTITION_SIZES
    ]
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])
    assert np.isfinite(results[0]).all() and results[0].shape == (SHAPE[0] * SHAPE[1], 2)


def test_a_sample_on_few_scan_rows_reads_only_those_rows(scan, recipe):
    """A grid of patterns (every 6th scan row) reads its rows, not the whole scan."""
    from .helpers import CountingArray

    _, raw, *_ = scan
    counting = CountingArray(raw.reshape(*SHAPE, *DETECTOR))
    rows = np.arange(0, SHAPE[0], 6)
    grid = (rows[:, None] * SHAPE[1] + np.arange(0, SHAPE[1], 4)[None, :]).ravel()
    executor = InlineExecutor(open_dataset(counting), get_backend("cpu"), SHAPE[0] * SHAPE[1])
    got = executor.run(Project(None, "grid", grid, n_features=recipe.n_features), recipe)
    everything = executor.run(Project(None, "all", n_features=recipe.n_features), recipe)
    np.testing.assert_array_equal(got, everything[grid])
    row_bytes = SHAPE[1] * raw[0].nbytes
    assert counting.bytes_read == (rows.size + SHAPE[0]) * row_bytes


def test_raw_cache_replays_the_same_patterns(scan, recipe, passes):
    """A dask-array scan (not read cheaply) is kept in memory after the first full pass; the
    passes that read the cache give the file's results."""
    import dask.array as da

    _, raw, *_ = scan
    data = da.from_array(raw.reshape(*SHAPE, *DETECTOR), chunks=(5, 23, 32, 32))
    executor = InlineExecutor(open_dataset(data), get_backend("cpu"), 64, cache_budget=1 << 30)
    pass_, expected = passes["label sums"]
    first = executor.run(pass_, recipe)
    assert executor.raw_kept and executor._cache._kept is not None
    second = executor.run(pass_, recipe)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    _close(second, expected, 2e-5)


# ------------------------------------------------------------------------------------ Dask
@pytest.fixture(scope="module")
def cluster():
    """Two worker processes, one thread each, as on this 2-core machine."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        yield local


@pytest.fixture(scope="module")
def client(cluster):
    from distributed import Client

    with Client(cluster) as c:
        yield c


def _dask_executor(client, path, partition_size):
    from gpu4d.engine.distributed import DaskExecutor

    return DaskExecutor(client, open_dataset(str(path)), get_backend("cpu"), partition_size)


@pytest.mark.parametrize("partition_size", (64, 257))
def test_dask_passes_equal_inline(scan, recipe, passes, client, partition_size):
    """The same partials merged in the same order: equal up to the float32 BLAS's own rounding,
    which depends on its thread count (Dask's workers run one BLAS thread, this process two)."""
    path = scan[0]
    inline = InlineExecutor(open_dataset(str(path)), get_backend("cpu"), partition_size)
    on_dask = _dask_executor(client, path, partition_size)
    for name, (pass_, _) in passes.items():
        expected, result = inline.run(pass_, recipe), on_dask.run(pass_, recipe)
        _close(result, tuple(np.asarray(e, np.float64) for e in expected) if isinstance(expected, tuple) else np.asarray(expected, np.float64), 1e-6)
    described = on_dask.describe()
    assert described["workers"] == 2, described  # both workers mapped partitions


def test_dask_workers_replace_the_spikes_the_client_would(scan, tmp_path, cluster):
    """Each worker reads its partitions with the frames beside them and checks a frame once."""
    data = scan[1].copy()
    rng = np.random.default_rng(3)
    for i in rng.choice(len(data), len(data) // 5, replace=False):  # a fifth of the frames hit
        data[i, rng.integers(0, DETECTOR[0]), rng.integers(0, DETECTOR[1])] = 20000
    path = tmp_path / "spiked.npy"
    np.save(path, data.reshape(*SHAPE, *DETECTOR))
    options = dict(batch_size=100, random_state=0)
    inline = gpu4d.cluster(str(path), 4, **options)
    on_dask = gpu4d.cluster(str(path), 4, scheduler=cluster.scheduler_address, **options)
    np.testing.assert_array_equal(on_dask.labels, inline.labels)
    np.testing.assert_allclose(on_dask.mean_patterns, inline.mean_patterns, rtol=1e-6, atol=1e-6)
    clean = gpu4d.cluster(str(scan[0]), 4, **options)
    assert adjusted_rand_score(clean.labels.ravel(), on_dask.labels.ravel()) >= 0.99
    kept = gpu4d.cluster(str(path), 4, spikes=False, scheduler=cluster.scheduler_address, **options)
    assert adjusted_rand_score(clean.labels.ravel(), kept.labels.ravel()) < 0.99


def test_sweep_and_cluster_on_dask_give_the_inline_result(scan, cluster, client):
    path = str(scan[0])
    options = dict(batch_size=100, random_state=0)
    inline = gpu4d.sweep(path, "2:5", **options)
    on_dask = gpu4d.sweep(path, "2:5", scheduler=cluster.scheduler_address, **options)
    for k in inline.ks:
        np.testing.assert_array_equal(on_dask[k].labels, inline[k].labels)
        assert on_dask[k].inertia == pytest.approx(inline[k].inertia, rel=1e-6)
        np.testing.assert_allclose(on_dask[k].mean_patterns, inline[k].mean_patterns, rtol=1e-6, atol=1e-6)
    assert on_dask.suggested_k == inline.suggested_k
    execution = on_dask.parameters["execution"]
    assert execution["executor"] == "dask" and execution["workers"] == 2
    assert execution["scheduler"] == cluster.scheduler_address
    assert inline.parameters["execution"]["executor"] == "inline"

    single = gpu4d.cluster(path, 4, scheduler=client, **options)
    reference = gpu4d.cluster(path, 4, **options)
    np.testing.assert_array_equal(single.labels, reference.labels)
    assert single.inertia == pytest.approx(reference.inertia, rel=1e-6)


class _SlowProject(Project):
    """A projection that takes a while per partition, so a worker can be killed mid-pass."""

    def map(self, ctx, part):
        time.sleep(0.3)
        return super().map(ctx, part)


def test_a_worker_killed_in_a_pass_changes_nothing(scan, recipe, passes, features):
    """Dask runs the dead worker's partitions again elsewhere; the merge is in partition order,
    so the result is the one of a run where no worker died, exactly."""
    import cloudpickle
    from distributed import Client, LocalCluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    path = scan[0]
    matrix = passes["project"][0].matrix
    slow = _SlowProject(matrix, "slow")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local, Client(local) as c:
        expected = _dask_executor(c, path, 20).run(Project(matrix, "fast"), recipe)
        pids = c.run(os.getpid)
        victim = sorted(pids.values())[0]
        killer = threading.Timer(1.0, os.kill, (victim, signal.SIGKILL))
        killer.start()
        try:
            result = _dask_executor(c, path, 20).run(slow, recipe)  # 21 partitions, ~3 s per worker
        finally:
            killer.cancel()
        assert victim not in c.run(os.getpid).values()  # the worker did die (and was replaced)
    np.testing.assert_array_equal(result, expected)


def test_unreachable_scheduler_is_a_clear_error(scan, monkeypatch):
    from gpu4d import executors

    monkeypatch.setattr(executors, "CONNECT_TIMEOUT_S", 2)
    with pytest.raises(InputError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9"):
        gpu4d.sweep(str(scan[0]), "2:3", scheduler="tcp://127.0.0.1:9")


def test_the_environment_variable_chooses_the_scheduler(scan, monkeypatch):
    from gpu4d import executors

    monkeypatch.setattr(executors, "CONNECT_TIMEOUT_S", 2)
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:9")
    with pytest.raises(InputError, match="tcp://127.0.0.1:9"):
        gpu4d.cluster(str(scan[0]), 3)


def test_a_scan_in_memory_cannot_go_to_workers(scan, cluster):
    _, raw, *_ = scan
    with pytest.raises(InputError, match="in memory.*file path"):
        gpu4d.sweep(raw.reshape(*SHAPE, *DETECTOR), "2:3", scheduler=cluster.scheduler_address)


def test_exact_mode_refuses_a_scheduler(scan, cluster):
    with pytest.raises(InputError, match="exact=True and init="):
        gpu4d.cluster(str(scan[0]), 3, exact=True, scheduler=cluster.scheduler_address)


def test_a_file_missing_on_a_worker_names_the_worker_and_the_path(scan, client, recipe, tmp_path):
    _, raw, *_ = scan
    path = tmp_path / "only-on-the-client.npy"
    np.save(path, raw.reshape(*SHAPE, *DETECTOR))
    executor = _dask_executor(client, path, 100)  # the client opened it (a memory map) ...
    path.unlink()  # ... and the workers will not find it
    with pytest.raises(InputError, match=rf"Dask worker tcp://[\d.:]+: .*{path.name}: no such file"):
        executor.run(Project(None, "features", n_features=recipe.n_features), recipe)


@pytest.mark.slow
def test_cli_with_a_scheduler_and_workers_started_by_dask_commands(scan, tmp_path):
    """The issue's check: `dask scheduler` and `dask worker` (2 processes) on 127.0.0.1, then
    `gpu4d cluster --scheduler` and `gpu4d sweep --scheduler` give the inline labels exactly
    and say that 2 workers did the work."""
    path = str(scan[0])
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    scheduler_file = tmp_path / "scheduler.json"
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    scheduler = subprocess.Popen(
        [*dask, "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)], **quiet
    )
    workers = None
    try:
        deadline = time.time() + 60
        while not scheduler_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        workers = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "2", "--nthreads", "1",
             "--no-dashboard"], **quiet,
        )
        from distributed import Client

        with Client(address, timeout=30) as c:
            c.wait_for_workers(2, timeout=60)
        for command, extra in (("cluster", ["-k", "4"]), ("sweep", ["-k", "2:4"])):
            outs = {}
            for where, scheduler_args in (("inline", []), ("dask", ["--scheduler", address])):
                out = tmp_path / f"{command}-{where}"
                code, _, err = run_main([command, path, *extra, "--batch-size", "100", "--out", str(out), "-q",
                                         "--no-figures", *scheduler_args])
                assert code == 0, err
                outs[where] = out
            if command == "cluster":
                labels = {w: np.load(o / "labels.npy") for w, o in outs.items()}
                summary = json.loads((outs["dask"] / "summary.json").read_text())
            else:
                labels = {w: np.load(o / "k04" / "labels.npy") for w, o in outs.items()}
                summary = json.loads((outs["dask"] / "k04" / "summary.json").read_text())
            np.testing.assert_array_equal(labels["dask"], labels["inline"])
            execution = summary["parameters"]["execution"]
            assert execution["workers"] == 2 and execution["scheduler"] == address, execution
            assert sum(execution["patterns_per_worker"].values()) >= SHAPE[0] * SHAPE[1]
        assert adjusted_rand_score(labels["dask"].ravel(), labels["inline"].ravel()) == 1.0
    finally:
        for process in (workers, scheduler):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)


def test_dask_workers_subtract_the_offset_the_client_found(tmp_path, cluster):
    """The detector offset travels with the scan to the workers: a scan with a pedestal gives
    on Dask the map and mean patterns it gives inline, both with the pedestal found."""
    from gpu4d.synthetic import make_scan

    scan = make_scan((16, 20), (32, 32), n_grains=3, dose=2000, dtype="uint16", seed=5)
    path = tmp_path / "pedestal.npy"
    np.save(path, scan.data + np.uint16(200))
    inline = gpu4d.sweep(str(path), "2:4", batch_size=64)
    on_dask = gpu4d.sweep(str(path), "2:4", batch_size=64, scheduler=cluster.scheduler_address)
    assert inline[3].mask.detector_offset == on_dask[3].mask.detector_offset >= 200
    for k in inline.ks:
        np.testing.assert_array_equal(on_dask[k].labels, inline[k].labels)
        np.testing.assert_allclose(on_dask[k].mean_patterns, inline[k].mean_patterns, rtol=1e-6, atol=1e-6)
