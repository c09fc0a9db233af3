"""Bad input: a clear gpu4d error naming the file or argument and what is wrong.

Through the API these are InputError / BackendUnavailable / OutputError; through the CLI they are
one ``gpu4d: error: ...`` line on stderr, exit code 2 and no traceback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import warnings

import dask.array as da
import numpy as np
import pytest

import gpu4d
from gpu4d import BackendUnavailable, InputError, OutputError
from gpu4d.backend import cuda_simulator_enabled, gpu_problem

from .helpers import LazyPaths

NINE_FRAMES = "quantumdetector/Single_9_Frame_CounterDepth_6_Rows_256.mib"
RAW_MIB = "quantumdetector/Single_9_Frame_CounterDepth_1_Rows_256RAW.mib"


def _gpu_usable() -> bool:
    return cuda_simulator_enabled() or gpu_problem() is None


needs_no_gpu = pytest.mark.skipif(
    _gpu_usable(), reason="this machine can run backend='gpu' (GPU or CUDA simulator)"
)


# -- files --------------------------------------------------------------------------------------


@pytest.fixture
def truncated_blo(tmp_path, blo_file):
    path = tmp_path / "truncated.blo"
    data = blo_file.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def random_blo(tmp_path):
    path = tmp_path / "random.blo"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return path


@pytest.fixture
def junk_hspy(tmp_path):
    path = tmp_path / "junk.hspy"
    path.write_text("this is not an HDF5 file\n" * 20)
    return path


@pytest.fixture
def unknown_format(tmp_path):
    path = tmp_path / "x.foo"
    path.write_text("some text\n")
    return path


def test_missing_file(tmp_path):
    path = tmp_path / "nothing_here.blo"
    with pytest.raises(InputError, match=re.escape(f"{path}: no such file")):
        gpu4d.open_dataset(path)


def test_unknown_format(unknown_format):
    with pytest.raises(InputError, match=re.escape(f"{unknown_format}: unknown file format '.foo'")):
        gpu4d.open_dataset(unknown_format)


def test_folder_is_not_a_data_file(tmp_path):
    with pytest.raises(InputError, match=re.escape(f"{tmp_path}: is a folder")):
        gpu4d.open_dataset(tmp_path)


def test_nine_frame_mib_needs_a_scan_shape(sample_file):
    path = sample_file(NINE_FRAMES)
    expected = f"{path}: holds 9 patterns of 256x256 in a list, with no scan shape"
    with pytest.raises(InputError, match=re.escape(expected) + ".*--scan NYxNX"):
        gpu4d.open_dataset(path)


@pytest.mark.parametrize("shape", [(2, 2, 2, 4, 4), (7,), (5, 6)])
def test_array_not_4d(shape):
    with pytest.raises(InputError, match=re.escape(f"data has shape {shape}") + ".*4D-STEM"):
        gpu4d.open_dataset(np.zeros(shape, np.float32))


def test_frames_without_scan_shape():
    with pytest.raises(InputError, match=r"holds 3 patterns of 4x5 in a list, with no scan shape"):
        gpu4d.open_dataset(np.zeros((3, 4, 5), np.float32))


def test_empty_axis():
    with pytest.raises(InputError, match=r"empty axis, shape \(2, 0, 4, 4\)"):
        gpu4d.open_dataset(np.zeros((2, 0, 4, 4)))


@pytest.mark.parametrize("dtype", [np.complex64, np.bool_, object])
def test_unsupported_dtype(dtype):
    with pytest.raises(InputError, match="data type .* is not supported"):
        gpu4d.open_dataset(np.zeros((2, 2, 4, 4), dtype))


def test_not_data_at_all():
    expected = "expected a file path, a numpy/dask array or a HyperSpy signal, got dict"
    with pytest.raises(InputError, match=expected):
        gpu4d.open_dataset({"a": 1})


def test_raw_mib(sample_file):
    path = sample_file(RAW_MIB)
    with pytest.raises(InputError, match=re.escape(str(path)) + ".*RAW MIB data not supported"):
        gpu4d.open_dataset(path)


def test_truncated_blockfile(truncated_blo):
    with pytest.raises(InputError, match=re.escape(str(truncated_blo)) + ".*truncated"):
        gpu4d.open_dataset(truncated_blo)


def _within(seconds: float, fn):
    """Run ``fn()`` in a daemon thread; fail (instead of hanging the run) if it takes longer."""
    outcome = {}

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"did not return within {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_random_bytes_blockfile(random_blo):
    # rsciio trusts the header: with random bytes it memory-maps billions of patterns and
    # never returns, so gpu4d checks the header first
    with pytest.raises(InputError, match=re.escape(f"{random_blo}: not a NanoMegas blockfile")):
        _within(60, lambda: gpu4d.open_dataset(random_blo))


def test_blockfile_header_larger_than_the_file(tmp_path, blo_file):
    """A valid signature with absurd dimensions is refused too, before rsciio sees it."""
    data = bytearray(blo_file.read_bytes())
    data[24:26] = (60000).to_bytes(2, "little")  # NX (bytes 24-25 of the header)
    path = tmp_path / "huge.blo"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=re.escape(f"{path}: the header describes 3x60000 patterns")):
        _within(60, lambda: gpu4d.open_dataset(path))


def test_junk_hspy(junk_hspy):
    with pytest.raises(InputError, match=re.escape(f"{junk_hspy}: cannot read this file")):
        gpu4d.open_dataset(junk_hspy)


def test_truncated_npy(tmp_path):
    path = tmp_path / "cut.npy"
    np.save(path, np.ones((4, 4, 16, 16), np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=re.escape(f"{path}: not a readable .npy file")):
        gpu4d.open_dataset(path)


def test_truncated_mib(tmp_path, mib_file):
    path = tmp_path / "cut.mib"
    data = mib_file.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 1000])
    shutil.copy(mib_file.with_suffix(".hdr"), path.with_suffix(".hdr"))
    # rsciio would read it as a smaller scan; the .hdr's frame count gives it away
    expected = (
        f"{path}: its header cut.hdr promises 8 frames but the file holds 4 and 1000 bytes of a "
        "cut-off one of 65920-byte frames (256x256 U08); the file is truncated"
    )
    with pytest.raises(InputError, match=re.escape(expected)):
        gpu4d.open_dataset(path)


# -- values -------------------------------------------------------------------------------------

NON_FINITE_CONTAINERS = {
    "numpy": lambda a, tmp: a,
    "dask": lambda a, tmp: da.from_array(a, chunks=(1, 6, 24, 24)),
    "npy file": lambda a, tmp: (np.save(tmp / "bad.npy", a), tmp / "bad.npy")[1],
}


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("container", list(NON_FINITE_CONTAINERS))
@pytest.mark.parametrize("mask", ["none", "auto"])
def test_non_finite_values_name_the_scan_position(tmp_path, two_phase, value, container, mask):
    data = two_phase.data.copy()
    data[2, 3, 5, 7] = value
    source = NON_FINITE_CONTAINERS[container](data, tmp_path)
    with pytest.raises(InputError, match=r"scan position \(y=2, x=3\) contains NaN or Inf"):
        gpu4d.cluster(source, 2, mask=mask, n_init=1)


# -- arguments ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "message"),
    [
        (0, "n_clusters=0 should be an integer >= 1"),
        (-3, "n_clusters=-3 should be an integer >= 1"),
        (2.5, "n_clusters=2.5 should be an integer >= 1"),
        (True, "n_clusters=True should be an integer >= 1"),
        (25, "n_clusters=25 should be <= the number of patterns 24"),
    ],
)
def test_bad_n_clusters(two_phase, k, message):
    with pytest.raises(InputError, match=re.escape(message)):
        gpu4d.cluster(two_phase.data, k, mask="none")


def test_more_clusters_than_patterns_in_a_file(blo_file):
    expected = "n_clusters=7 should be <= the number of patterns 6"
    with pytest.raises(InputError, match=re.escape(expected)):
        gpu4d.cluster(blo_file, 7)


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.zeros((4, 4), bool), r"mask shape \(4, 4\) does not match the detector shape \(24, 24\)"),
        (np.zeros((24, 23), bool), r"mask shape \(24, 23\) does not match the detector shape"),
        (np.ones((24, 24), bool), "masks every detector pixel"),
        (1000, "masks every detector pixel"),
        ((12, 12, 1000), "masks every detector pixel"),
        ("1000", "masks every detector pixel"),
        ("annulus:1000,2000", "masks every detector pixel"),
        (np.zeros((24, 24, 1), bool), r"expected a 2-D boolean array \(qy, qx\), got shape"),
        (np.full((24, 24), 0.5), "expected booleans"),
        (-2, "mask radius must be > 0, got -2.0"),
        ({"r": 3}, "mask: cannot use"),
    ],
)
def test_bad_mask(two_phase, mask, message):
    with pytest.raises(InputError, match=message):
        gpu4d.cluster(two_phase.data, 2, mask=mask)


def test_mask_file_of_the_wrong_shape(tmp_path, blo_file):
    path = tmp_path / "mask.npy"
    np.save(path, np.zeros((128, 128), bool))
    expected = f"mask file {path}: mask shape (128, 128) does not match the detector shape (144, 144)"
    with pytest.raises(InputError, match=re.escape(expected)):
        gpu4d.cluster(blo_file, 2, mask=str(path))


def test_missing_mask_file(tmp_path, two_phase):
    path = tmp_path / "no_mask.npy"
    with pytest.raises(InputError, match=re.escape(f"mask file {path}: no such file")):
        gpu4d.cluster(two_phase.data, 2, mask=str(path))


UNPARSEABLE_MASKS = {
    "abc": "cannot parse 'abc'",
    "annulus:5": "cannot parse 'annulus:5'",
    "annulus:a,b": "cannot parse 'annulus:a,b'",
    "annulus:5,2": "annulus needs 0 <= R1 < R2, got 'annulus:5,2'",
    "1,2": "cannot parse '1,2'",
    "1,2,3,4": "cannot parse '1,2,3,4'",
    "": "cannot parse ''",
    "-3": "mask radius must be > 0",
    "0": "mask radius must be > 0",
    "nan": "mask radius must be > 0",
    "10,10,-1": "mask radius must be > 0",
}


@pytest.mark.parametrize("text", list(UNPARSEABLE_MASKS))
def test_unparseable_mask_strings(two_phase, text):
    with pytest.raises(InputError, match=re.escape(UNPARSEABLE_MASKS[text])):
        gpu4d.cluster(two_phase.data, 2, mask=text)


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("normalize", "maximum", "normalize must be one of none, max, l2, sum; got 'maximum'"),
        ("normalize", None, "normalize must be one of none, max, l2, sum; got None"),
        ("transform", "log", "transform must be one of none, sqrt, log1p; got 'log'"),
        ("backend", "cuda", "backend must be one of cpu, gpu, auto; got 'cuda'"),
        ("backend", None, "backend must be one of cpu, gpu, auto; got None"),
        ("batch_size", 0, "batch_size must be a positive integer, got 0"),
        ("batch_size", 2.5, "batch_size must be a positive integer, got 2.5"),
        ("n_init", 0, "n_init=0 should be an integer >= 1"),
        ("max_iter", -1, "max_iter=-1 should be an integer >= 1"),
        ("tol", -1.0, "tol=-1.0 should be a number >= 0"),
        ("random_state", "seven", "random_state='seven' should be an integer or None"),
    ],
)
def test_bad_option_names_and_values(two_phase, argument, value, message):
    with pytest.raises(InputError, match=re.escape(message)):
        gpu4d.cluster(two_phase.data, 2, mask="none", **{argument: value})


# -- backends -----------------------------------------------------------------------------------


@needs_no_gpu
def test_gpu_backend_unavailable(two_phase):
    with pytest.raises(BackendUnavailable) as info:
        gpu4d.cluster(two_phase.data, 2, backend="gpu")
    message = str(info.value)
    what_is_missing = r"(is not installed|no CUDA driver or device|cannot reach CUDA)"
    assert re.search(r"backend='gpu' cannot run here: .*" + what_is_missing, message)
    assert "pip install 'gpu4d[gpu]'" in message


@needs_no_gpu
def test_auto_backend_falls_back_to_cpu_with_one_warning(two_phase):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = gpu4d.cluster(two_phase.data, 2, backend="auto", mask="auto", n_init=1)
    backend_warnings = [w for w in caught if "backend='auto'" in str(w.message)]
    assert len(backend_warnings) == 1
    assert re.search(r"no usable GPU \(.+\); using the CPU backend", str(backend_warnings[0].message))
    assert backend_warnings[0].filename == __file__  # points at the caller's line
    assert result.backend == "cpu"
    assert result.parameters["backend_requested"] == "auto"


# -- output -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_result(make_scan):
    return gpu4d.cluster(make_scan().data, 2, mask="none", n_init=1)


def test_output_under_a_regular_file(tmp_path, small_result):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match=re.escape(f"'{blocker}' is not a folder")):
        small_result.save(blocker / "results", figures=False)
    assert blocker.read_text() == "not a folder"


def test_output_is_a_regular_file(tmp_path, small_result):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    with pytest.raises(OutputError, match="it exists and is not a folder"):
        small_result.save(target, figures=False, overwrite=True)
    assert target.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_output_in_a_read_only_folder(tmp_path, small_result):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="Permission denied"):
            small_result.save(locked / "results", figures=False)
    finally:
        locked.chmod(0o755)


def test_existing_output_without_overwrite(tmp_path, small_result):
    out = tmp_path / "results"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(OutputError, match=re.escape(f"'{out}' already exists; pass --overwrite")):
        small_result.save(out, figures=False)
    assert [p.name for p in out.iterdir()] == ["old.txt"]


# -- the same errors through the CLI -------------------------------------------------------------


#: (id, arguments after ``gpu4d cluster``, fragment of the error line); ``{name}`` is a path
#: from the ``bad_files`` fixture.
CLI_CASES = [
    ("missing file", "{tmp}/none.blo -k 2", "{tmp}/none.blo: no such file"),
    ("unknown format", "{foo} -k 2", "{foo}: unknown file format '.foo'"),
    ("no scan shape", "{nine} -k 2", "{nine}: holds 9 patterns of 256x256 in a list, with no scan shape"),
    ("RAW MIB", "{raw} -k 2", "{raw}: cannot read this file as 4D-STEM data (NotImplementedError: RAW"),
    ("truncated", "{truncated} -k 2", "{truncated}: the header describes"),
    ("random bytes", "{random} -k 2", "{random}: not a NanoMegas blockfile"),
    ("junk hspy", "{junk} -k 2", "{junk}: cannot read this file"),
    ("NaN", "{nan} -k 2 --mask none", "{nan}: the pattern at scan position (y=1, x=0) contains NaN"),
    ("k=0", "{nan} -k 0", "n_clusters=0 should be an integer >= 1"),
    ("k>n", "{blo} -k 7", "n_clusters=7 should be <= the number of patterns 6"),
    ("mask radius 1000", "{blo} -k 2 --mask 1000", "mask '1000' masks every detector pixel"),
    ("mask all True", "{blo} -k 2 --mask {all_true}", "masks every detector pixel"),
    ("mask shape", "{blo} -k 2 --mask {small_mask}", "(10, 10) does not match the detector shape"),
    ("mask text", "{blo} -k 2 --mask middle", "mask: cannot parse 'middle'"),
    ("mask annulus", "{blo} -k 2 --mask annulus:9", "mask: cannot parse 'annulus:9'"),
    ("mask negative", "{blo} -k 2 --mask=-4", "mask radius must be > 0"),
    ("batch size", "{blo} -k 2 --batch-size 0", "batch_size must be a positive integer, got 0"),
    ("gpu", "{blo} -k 2 --backend gpu", "backend='gpu' cannot run here"),
]


@pytest.fixture
def bad_files(request, tmp_path, sample_file, random_blo, junk_hspy, unknown_format):
    """Paths for CLI_CASES, by name; a sample file is looked up only by the cases naming it."""
    nan = tmp_path / "nan.npy"
    data = np.ones((2, 3, 8, 8), np.float32)
    data[1, 0, 2, 2] = np.nan
    np.save(nan, data)
    all_true, small_mask = tmp_path / "all_true.npy", tmp_path / "small_mask.npy"
    np.save(all_true, np.ones((144, 144), bool))
    np.save(small_mask, np.zeros((10, 10), bool))
    return LazyPaths({
        "tmp": tmp_path, "blo": lambda: request.getfixturevalue("blo_file"),
        "truncated": lambda: request.getfixturevalue("truncated_blo"), "random": random_blo,
        "junk": junk_hspy, "foo": unknown_format, "nine": lambda: sample_file(NINE_FRAMES),
        "raw": lambda: sample_file(RAW_MIB), "nan": nan, "all_true": all_true, "small_mask": small_mask,
    })


@pytest.mark.parametrize(("name", "arguments", "message"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_errors_exit_2_with_one_line(run_cli, bad_files, name, arguments, message):
    if name == "gpu" and _gpu_usable():
        pytest.skip("this machine can run backend='gpu'")
    out = bad_files["tmp"] / "results"
    run = run_cli("cluster", *(a.format_map(bad_files) for a in arguments.split()), "--out", out, "-q")
    assert run.code == 2
    assert "Traceback" not in run.err
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run.err
    assert lines[0].startswith("gpu4d: error: ")
    assert message.format_map(bad_files) in lines[0]
    if name == "gpu":
        assert "pip install 'gpu4d[gpu]'" in lines[0]
    assert not out.exists(), "a failed run must leave no results folder"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--normalize", "peak"], "argument --normalize: invalid choice: 'peak'"),
        (["--transform", "log"], "argument --transform: invalid choice: 'log'"),
        (["--backend", "cuda"], "argument --backend: invalid choice: 'cuda'"),
        (["-k", "two"], "argument -k/--n-clusters: invalid int value: 'two'"),
        (["--batch-size", "1.5"], "argument --batch-size: invalid int value: '1.5'"),
    ],
)
def test_cli_rejects_bad_option_names(run_cli, tmp_path, blo_file, argv, message):
    argv = ["-k", "2", *argv] if argv[0] != "-k" else argv
    run = run_cli("cluster", blo_file, *argv, "--out", tmp_path / "results")
    assert run.code == 2
    assert "Traceback" not in run.err
    assert message in run.err
    assert run.err.strip().splitlines() == [run.err.strip()]  # one line, no usage block
    assert run.err.startswith("gpu4d: error: ")
    assert not (tmp_path / "results").exists()


def test_cli_output_under_a_regular_file(run_cli, tmp_path, blo_file):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    run = run_cli("cluster", blo_file, "-k", 2, "--out", blocker / "sub", "-q")
    assert run.code == 2
    assert "Traceback" not in run.err
    assert run.err.strip().splitlines() == [
        f"gpu4d: error: cannot write results to '{blocker / 'sub'}': '{blocker}' is not a folder"
    ]


def test_cli_existing_output_without_overwrite(run_cli, tmp_path, blo_file):
    out = tmp_path / "results"
    out.mkdir()
    (out / "keep.txt").write_text("keep")
    run = run_cli("cluster", blo_file, "-k", 2, "--out", out, "-q")
    assert run.code == 2
    assert "Traceback" not in run.err
    assert run.err.strip().splitlines() == [
        f"gpu4d: error: results folder '{out}' already exists; pass --overwrite to replace it"
    ]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


# -- values checked before the work, files read in words (issue 14) ------------------------------


def _error_line(run) -> str:
    """The one ``gpu4d: error:`` line of a failed run (exit 2, no traceback)."""
    assert run.code == 2, (run.code, run.out, run.err)
    assert "Traceback" not in run.err
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run.err
    assert lines[0].startswith("gpu4d: error: ")
    return lines[0]


def test_float64_beyond_float32_is_named(run_cli, tmp_path):
    path = tmp_path / "huge.npy"
    data = np.ones((2, 3, 8, 8))
    data[1, 2, 4, 4] = 1e300  # finite in float64, inf in float32
    np.save(path, data)
    for mask in ("none", "auto"):
        line = _error_line(run_cli("cluster", path, "-k", 2, "--mask", mask, "--out", tmp_path / "o", "-q"))
        assert f"{path}: the pattern at scan position (y=1, x=2) holds 1e+300, too large for gpu4d's float32" in line
        assert not (tmp_path / "o").exists()
    with pytest.raises(InputError, match=r"scan position \(y=1, x=2\) holds -1e\+300"):
        gpu4d.cluster(-data, 2, mask="none")


def _value_limit(qy, qx):
    """|values| whose squares, summed over a pattern's qy * qx pixels, stay within float32."""
    return np.sqrt(np.finfo(np.float32).max / (4 * qy * qx))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("normalize", ["none", "l2", "sum", "max"])
def test_values_whose_squares_overflow_float32_are_refused(dtype, normalize):
    """1e30 fits in float32, but its square does not: without the check, normalize='none' ended
    in scikit-learn's traceback and 'l2' silently zeroed every pattern."""
    data = np.random.default_rng(0).random((3, 4, 16, 16)).astype(dtype)
    data[2, 1] *= 1e30
    expected = re.escape("(y=2, x=1) holds ") + ".*" + re.escape(
        f", too large for gpu4d's float32 arithmetic (squares summed over 16x16 pixels need "
        f"|value| <= {_value_limit(16, 16):.2g})"
    )
    with pytest.raises(InputError, match=expected):
        gpu4d.cluster(data, 2, mask="none", normalize=normalize, n_init=1)


def test_values_just_within_the_limit_are_clustered():
    limit = _value_limit(6, 6)
    data = np.full((2, 2, 6, 6), 0.5 * limit)
    data[0, 0, 0, 0] = 0.99 * limit  # after max-normalizing: one pattern differs from the other three
    result = gpu4d.cluster(data, 2, mask="none", n_init=1)
    assert sorted(result.cluster_sizes.tolist()) == [1, 3]
    data[0, 0, 0, 0] = 1.01 * limit
    with pytest.raises(InputError, match="too large for gpu4d's float32 arithmetic"):
        gpu4d.cluster(data, 2, mask="none", n_init=1)


def test_large_integers_are_checked_too():
    data = np.ones((2, 2, 8, 8), np.uint64)
    data[1, 1, 2, 2] = 2**63
    with pytest.raises(InputError, match=r"\(y=1, x=1\) holds 9.22e\+18, too large"):
        gpu4d.cluster(data, 2, mask="none")


@pytest.mark.parametrize("seed", ["-1", "4294967296", "1.5", "seven"])
def test_bad_seed(run_cli, tmp_path, blo_file, seed):
    line = _error_line(run_cli("cluster", blo_file, "-k", 2, f"--seed={seed}", "--out", tmp_path / "o"))
    assert "argument --seed: invalid seed" in line and "0..4294967295" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_bad_random_state_in_the_api(two_phase, seed):
    with pytest.raises(InputError, match=re.escape(f"random_state={seed} should be in 0..4294967295")):
        gpu4d.cluster(two_phase.data, 2, mask="none", random_state=seed)


def test_largest_seed_runs(two_phase):
    result = gpu4d.cluster(two_phase.data, 2, mask="none", random_state=2**32 - 1, n_init=1)
    assert result.parameters["random_state"] == 2**32 - 1


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--tol", "nan", "argument --tol: invalid value 'nan': expected a number >= 0"),
        ("--tol", "-1", "argument --tol: invalid value '-1': expected a number >= 0"),
        ("--tol", "inf", "argument --tol: invalid value 'inf'"),
        ("--sketch-size", "0", "argument --sketch-size: invalid value '0': expected an integer >= 1"),
    ],
)
def test_bad_numbers_through_the_cli(run_cli, tmp_path, blo_file, option, value, message):
    command = "sweep" if option == "--sketch-size" else "cluster"
    argv = [command, blo_file, *(["-k", "2"] if command == "cluster" else []), f"{option}={value}"]
    line = _error_line(run_cli(*argv, "--out", tmp_path / "o"))
    assert message in line


def test_blockfile_header_with_zero_pattern_size(run_cli, tmp_path, blo_file):
    data = bytearray(blo_file.read_bytes())
    data[20:22] = (0).to_bytes(2, "little")  # DP_SZ
    path = tmp_path / "zero.blo"
    path.write_bytes(bytes(data))
    line = _error_line(run_cli("cluster", path, "-k", 2, "--out", tmp_path / "o", "-q"))
    assert f"{path}: the blockfile header describes 3x2 patterns of 0x0 pixels; a zero size" in line


@pytest.mark.parametrize("suffix", [".mib", ".blo", ".hspy", ".npy", ".h5"])
def test_empty_files(run_cli, tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    line = _error_line(run_cli("cluster", path, "-k", 2, "--out", tmp_path / "o", "-q"))
    assert f"{path}: the file is empty (0 bytes)" in line


def test_empty_path(run_cli, tmp_path):
    line = _error_line(run_cli("cluster", "", "-k", 2, "--out", tmp_path / "o", "-q"))
    assert "data: the file path is empty" in line


def test_mib_whose_hdr_promises_fewer_frames(run_cli, tmp_path, mib_file):
    path = tmp_path / "other.mib"
    path.write_bytes(mib_file.read_bytes())
    header = mib_file.with_suffix(".hdr").read_text(errors="replace")
    header = header.replace("Frames in Acquisition (Number):\t8", "Frames in Acquisition (Number):\t4")
    path.with_suffix(".hdr").write_text(header)
    line = _error_line(run_cli("cluster", path, "-k", 2, "--out", tmp_path / "o", "-q"))
    assert f"{path}: holds 8 frames but its header other.hdr promises 4; the header belongs to another acquisition" in line


def test_truncated_mib_through_the_cli(run_cli, tmp_path, mib_file):
    path = tmp_path / "cut.mib"
    path.write_bytes(mib_file.read_bytes()[: 3 * 65920])  # 3 whole frames of 8
    shutil.copy(mib_file.with_suffix(".hdr"), path.with_suffix(".hdr"))
    line = _error_line(run_cli("cluster", path, "-k", 2, "--out", tmp_path / "o", "-q"))
    assert f"{path}: its header cut.hdr promises 8 frames but the file holds 3 of 65920-byte frames" in line
    assert "truncated" in line


def test_cut_mib_without_its_hdr(tmp_path, mib_file):
    path = tmp_path / "cut.mib"
    path.write_bytes(mib_file.read_bytes()[: 3 * 65920 + 100])
    with pytest.raises(InputError, match=re.escape(f"{path}: holds 3 and 100 bytes of a cut-off one")):
        gpu4d.open_dataset(path)


def test_one_dimensional_mib_without_its_hdr(run_cli, tmp_path, sample_file):
    path = tmp_path / "frames.mib"
    path.write_bytes(sample_file(NINE_FRAMES).read_bytes())
    line = _error_line(run_cli("cluster", path, "-k", 2, "--out", tmp_path / "o", "-q"))
    assert f"{path}: holds 9 patterns of 256x256 in a list, with no scan shape (its header frames.hdr is not beside it)" in line
    assert "--scan NYxNX" in line


def test_not_a_merlin_file(run_cli, tmp_path):
    path = tmp_path / "noise.mib"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    line = _error_line(run_cli("cluster", path, "-k", 2, "--out", tmp_path / "o", "-q"))
    assert f"{path}: not a Merlin .mib file: frame header should start with b'MQ1," in line


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("merlin://", "merlin://: expected merlin://HOST or merlin://HOST:PORT."),
        ("merlin://host:port", "merlin://host:port: the port should be an integer in 1..65535."),
        ("merlin://host:99999", "the port should be an integer in 1..65535."),
        ("merlin://[::1", "merlin://[::1: not a valid URL"),
        ("http://host", "http://host: unknown scheme 'http'"),
        ("scan.txt", "scan.txt: a live source should be merlin://HOST:PORT or a .mib/.hdr path"),
    ],
)
def test_live_with_a_malformed_source_leaves_no_folder(run_cli, tmp_path, url, message):
    out = tmp_path / "live"
    line = _error_line(run_cli("live", url, "-k", 2, "--scan", "4x4", "--out", out, "-q"))
    assert message in line
    assert not out.exists()


@pytest.mark.parametrize("scan", ["4by4", "0x4", ""])
def test_live_with_a_bad_scan_leaves_no_folder(run_cli, tmp_path, scan):
    out = tmp_path / "live"
    line = _error_line(run_cli("live", "merlin://127.0.0.1:6342", "-k", 2, f"--scan={scan}", "--out", out, "-q"))
    assert "--scan" in line
    assert not out.exists()


# -- surprises: default ks, warnings, --help (issue 14) --------------------------------------------


def test_sweep_clips_the_default_ks_in_one_line(run_cli, tmp_path, blo_file):
    out = tmp_path / "sweep"
    run = run_cli("sweep", blo_file, "--out", out, "-q", "--no-figures")
    assert run.code == 0, run.err
    assert run.err.strip().splitlines() == [
        f"gpu4d: warning: {blo_file}: the scan has 6 patterns, so k = 2..6 instead of the default 2..12"
    ]
    assert json.loads((out / "sweep.json").read_text())["ks"] == [2, 3, 4, 5, 6]


def test_explicit_ks_beyond_the_scan_are_still_an_error(run_cli, tmp_path, blo_file):
    line = _error_line(run_cli("sweep", blo_file, "-k", "2:12", "--out", tmp_path / "o", "-q"))
    assert "ks: k=7 should be <= the number of patterns 6" in line


def test_sweep_of_a_single_pattern(tmp_path):
    with pytest.raises(InputError, match=r"a scan of 1 pattern\(s\) cannot be split into clusters"):
        gpu4d.sweep(np.ones((1, 1, 8, 8), np.float32), mask="none")


def test_library_warnings_become_one_line(run_cli, tmp_path):
    """All-equal patterns: scikit-learn warns (ConvergenceWarning, with a source line) that it
    found fewer distinct points than clusters; the CLI says it once, in one line."""
    path = tmp_path / "flat.npy"
    np.save(path, np.ones((3, 3, 8, 8), np.float32))
    run = run_cli("cluster", path, "-k", 3, "--mask", "none", "--align", "none", "--out", tmp_path / "o",
                  "-q", "--no-figures")
    assert run.code == 0, run.err
    assert run.err.strip().splitlines() == [
        "gpu4d: warning: KMeans found only 1 distinct patterns for the 3 clusters asked for (many "
        "patterns are identical after masking and normalizing); some clusters are empty"
    ]


def test_warning_translation():
    from sklearn.exceptions import ConvergenceWarning

    from gpu4d.cli_warnings import translate

    assert translate("something\n   changed", FutureWarning) is None
    assert translate("old API", DeprecationWarning) is None
    assert translate("a  two-line\nmessage", UserWarning) == "a two-line message"
    assert translate("Maximum number of iterations reached", ConvergenceWarning).startswith(
        "KMeans stopped at --max-iter"
    )


@pytest.mark.parametrize("command", ["cluster", "sweep", "live", "demo"])
def test_every_option_states_its_default(command):
    from gpu4d.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[command]
    for action in sub._actions:
        if not action.option_strings or action.nargs == 0 or action.required:
            continue  # positionals, flags (store_true, --help) and required options
        assert action.help and "default" in action.help.lower(), (command, action.option_strings)


@pytest.mark.parametrize(
    "array",
    [np.zeros((2, 2, 4, 4), "datetime64[s]"), np.zeros((2, 2, 4, 4), [("a", "f4"), ("b", "i4")]),
     np.zeros((2, 2, 4, 4), np.complex128)],
    ids=["datetime64", "structured", "complex128"],
)
def test_eight_byte_non_numbers_in_a_file_are_refused_before_any_read(run_cli, tmp_path, array):
    """8-byte types that are not numbers once reached the value-range check (a traceback)."""
    path = tmp_path / "odd.npy"
    np.save(path, array)
    line = _error_line(run_cli("cluster", path, "-k", 2, "--out", tmp_path / "o", "-q"))
    assert f"{path}: data type {array.dtype} is not supported" in line
