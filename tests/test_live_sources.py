"""gpu4d.live frame sources: Merlin TCP (against LiberTEM-live's simulator and a faulty peer of
our own), growing .mib files, iterables, and the MIB decoders against RosettaSciIO and LiberTEM.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from gpu4d.errors import Gpu4dError, InputError
from gpu4d.live import (
    FrameBatch,
    FrameSource,
    GrowingMibSource,
    IterableSource,
    MerlinTCPSource,
    StreamIncomplete,
    open_source,
)

from .helpers import sample_path
from .mib_writer import acquisition_header, encode_frames, frame_header

# -- shared sample data ----------------------------------------------------------------------


def qd(name: str) -> Path:
    """A Merlin sample file (shared/data/quantumdetector); skips, or in CI fails, if absent."""
    return sample_path(f"quantumdetector/{name}")


SAMPLES = [
    "001_4x2_6bit",
    "002_4x2_6bit_roi128",
    "002_merlin_test_roi_sig256x128_nav4x2_hot_pixel_52x_39y",
    "Quad_9_Frame_CounterDepth_6_Rows_256",
    "Single_1_Frame_CounterDepth_24_Rows_256",
    "Single_9_Frame_CounterDepth_12_Rows_256",
    "Single_9_Frame_CounterDepth_1_Rows_256",
    "Single_9_Frame_CounterDepth_6_Rows_256",
]


def read_all(source, max_frames=4):
    """All batches of a source, checked to be contiguous, and their frames concatenated."""
    batches = list(source.batches(max_frames))
    starts = [b.start for b in batches]
    assert starts == list(np.cumsum([0] + [len(b.frames) for b in batches[:-1]]))
    assert all(1 <= len(b.frames) <= max_frames for b in batches)
    return batches, np.concatenate([b.frames for b in batches])


def rsciio_frames(mib: Path) -> np.ndarray:
    from rsciio.quantumdetector import file_reader

    data = file_reader(str(mib))[0]["data"]
    return data.reshape(-1, *data.shape[-2:])


def copy_sample(name: str, folder: Path) -> Path:
    """Copy a sample .mib/.hdr pair alone into ``folder`` (the simulator globs siblings)."""
    for suffix in (".mib", ".hdr"):
        shutil.copy(qd(f"{name}{suffix}"), folder / f"{name}{suffix}")
    return folder / f"{name}.hdr"


# -- decoding the sample files ----------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_mib_decodes_like_rsciio(name):
    pytest.importorskip("rsciio")
    with GrowingMibSource(qd(f"{name}.mib"), idle_timeout_s=0.2) as src:
        _, frames = read_all(src)
        assert src.expected_frames == len(frames)  # from the .hdr
        assert src.detector_shape == frames.shape[1:]
    want = rsciio_frames(qd(f"{name}.mib"))
    assert frames.dtype.isnative and frames.dtype == want.dtype.newbyteorder("=")
    np.testing.assert_array_equal(frames, want)


def test_raw_sample_matches_the_counting_mode_recording_of_the_same_pattern():
    # rsciio refuses RAW files; the same test pattern was recorded a second later in U08,
    # so all but a few noisy pixels must agree.
    with GrowingMibSource(
        qd("Single_9_Frame_CounterDepth_1_Rows_256RAW.mib"), idle_timeout_s=0.2
    ) as src:
        _, raw = read_all(src)
    with GrowingMibSource(
        qd("Single_9_Frame_CounterDepth_1_Rows_256.mib"), idle_timeout_s=0.2
    ) as src:
        _, counted = read_all(src)
    assert raw.shape == counted.shape == (9, 256, 256) and raw.dtype == np.uint8
    assert raw.max() == 1 and raw.sum() > 20000
    assert (raw == counted).mean() > 0.999


def test_sample_orientation_matches_rsciio_not_the_wire():
    # The file name gives the hot pixel in wire (LiberTEM) coordinates; we flip rows like rsciio.
    path = qd("002_merlin_test_roi_sig256x128_nav4x2_hot_pixel_52x_39y.mib")
    with GrowingMibSource(path, idle_timeout_s=0.2) as src:
        _, frames = read_all(src)
    hot = np.unravel_index(frames.sum(axis=0).argmax(), frames.shape[1:])
    assert hot == (128 - 1 - 39, 52)


# -- encoding/decoding round trips and the raw decoders ---------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32])
@pytest.mark.parametrize("max_frames", [1, 7, 50])
def test_encoded_frames_round_trip_through_a_file(tmp_path, dtype, max_frames):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, np.iinfo(dtype).max, (23, 5, 7), dtype=dtype, endpoint=True)
    path = tmp_path / "x.mib"
    path.write_bytes(encode_frames(frames))
    with GrowingMibSource(path, n_frames=23, idle_timeout_s=0.2) as src:
        _, got = read_all(src, max_frames)
    np.testing.assert_array_equal(got, frames)
    assert got.dtype == dtype and got.flags.c_contiguous


def raw_header(seq, width, height, depth, *, layout="1x1", chips=1, header_size=384, mq1a=True):
    fields = (
        f"MQ1,{seq:06d},{header_size:05d},{chips:02d},{width:04d},{height:04d},R64,{layout:>6},"
        f"{'0F' if chips == 4 else '01'},2024-01-01 00:00:00.000000,0.001000,0,0,0,"
        + ",".join(["1.0E+1"] * 8)
        + ",3RX,"
        + ",".join(["000"] * 27)
        + ","
    )
    if mq1a:
        fields += f"MQ1A,2024-01-01T00:00:00.000000000Z,1000000ns,{depth},"
    return fields.encode().ljust(header_size, b"\0")


RAW_CASES = [("1x1", 1), ("1x1", 6), ("1x1", 12), ("1x1", 24), ("2x2", 1), ("2x2", 6), ("2x2", 12)]


def random_raw(depth, nbytes, rng):
    """Random raw readout bytes whose pixel values fit the counter depth."""
    if depth in (12, 24):
        return rng.integers(0, 4096, nbytes // 2, dtype=np.uint16).astype(">u2").view(np.uint8)
    return rng.integers(0, 64 if depth == 6 else 256, nbytes, dtype=np.uint8)


def write_raw_file(path, layout, depth, n=2, chip=64, seed=0):
    """A raw .mib of ``n`` frames with random readout; return (file, list of readout bytes)."""
    rng = np.random.default_rng(seed)
    quad = layout != "1x1"
    width = 4 * chip if quad else (2 * chip if depth == 24 else chip)
    npix = width * chip
    nbytes = {1: npix // 8, 6: npix, 12: 2 * npix, 24: 2 * npix}[depth]
    readouts = [random_raw(depth, nbytes, rng) for _ in range(n)]
    with open(path, "wb") as f:
        for i, data in enumerate(readouts):
            f.write(
                raw_header(
                    i + 1,
                    width,
                    chip,
                    depth,
                    layout=layout,
                    chips=4 if quad else 1,
                    header_size=768 if quad else 384,
                )
            )
            f.write(data.tobytes())
    return readouts


def libertem_decode(readout, layout, depth, chip):
    """Decode one raw frame with LiberTEM's own per-read-range decoders (pure-Python path)."""
    mib = pytest.importorskip("libertem.io.dataset.mib", reason="libertem not installed")
    dtype = {1: np.uint8, 6: np.uint8, 12: np.uint16, 24: np.uint32}[depth]
    if layout == "1x1":
        out = np.zeros((2, chip * chip), dtype)
        if depth == 24:  # two 12-bit frames, the first holding the high bits
            half = len(readout) // 2
            mib.decode_r24_swap.py_func(readout[:half], out, 0, dtype, None, None, None, None)
            mib.decode_r24_swap.py_func(readout[half:], out, 1, dtype, None, None, None, None)
        else:
            decode = {1: mib.decode_r1_swap, 6: mib.decode_r6_swap, 12: mib.decode_r12_swap}[depth]
            decode.py_func(readout, out, 0, dtype, None, None, None, None)
        return out[0].reshape(chip, chip)
    # Quad: the read ranges of libertem.io.dataset.mib._mib_2x2_tile_block, one chip row each.
    decode = {1: mib.decode_r1_swap_2x2, 6: mib.decode_r6_swap_2x2, 12: mib.decode_r12_swap_2x2}[
        depth
    ]
    side = 2 * chip
    rows = readout.reshape(chip, -1)
    q = rows.shape[1] // 4
    out = np.zeros((1, side * side), dtype)
    shape = np.array([1, side, side])
    for y in range(side):
        if y < chip:
            ranges = [(rows[y, 3 * q :], 0), (rows[y, 2 * q : 3 * q], 0)]
        else:
            yy = side - 1 - y
            ranges = [(rows[yy, q : 2 * q], 1), (rows[yy, :q], 1)]
        for j, (inp, flip) in enumerate(ranges):
            decode.py_func(
                np.ascontiguousarray(inp),
                out,
                2 * y + j,
                dtype,
                np.array([0, 0, 0, flip]),
                None,
                shape,
                None,
            )
    return out[0].reshape(side, side)


@pytest.mark.parametrize("layout,depth", RAW_CASES)
def test_raw_decoders_match_libertem(tmp_path, layout, depth):
    pytest.importorskip("libertem", reason="libertem (from libertem-live) not installed")
    path = tmp_path / "raw.mib"
    readouts = write_raw_file(path, layout, depth, chip=64)
    with GrowingMibSource(path, n_frames=2, idle_timeout_s=0.2) as src:
        _, frames = read_all(src)
    for frame, readout in zip(frames, readouts, strict=True):
        # LiberTEM keeps the wire's row order; gpu4d flips rows like rsciio.
        np.testing.assert_array_equal(frame[::-1], libertem_decode(readout, layout, depth, 64))


def test_raw_quad_with_gap_pixels_places_chips_around_a_zero_gap(tmp_path):
    write_raw_file(tmp_path / "a.mib", "2x2", 6, chip=64, seed=3)
    write_raw_file(tmp_path / "b.mib", "2x2G", 6, chip=64, seed=3)
    with GrowingMibSource(tmp_path / "a.mib", n_frames=2, idle_timeout_s=0.2) as src:
        _, plain = read_all(src)
    with GrowingMibSource(tmp_path / "b.mib", n_frames=2, idle_timeout_s=0.2) as src:
        _, gapped = read_all(src)
    assert gapped.shape == (2, 130, 130)
    keep = np.r_[0:64, 66:130]
    np.testing.assert_array_equal(gapped[:, keep][:, :, keep], plain)
    assert not gapped[:, 64:66].any() and not gapped[:, :, 64:66].any()


@pytest.mark.parametrize(
    "header,match",
    [
        (raw_header(1, 64, 64, 12, mq1a=False), "counter depth None"),
        (raw_header(1, 256, 64, 6, layout="Nx1", chips=4), "layout 'Nx1'.*header field 8"),
        (raw_header(1, 256, 64, 24, layout="2x2", chips=4, header_size=768), "raw quad"),
        (frame_header(1, (4, 4), pixel_depth="U12"), "pixel depth 'U12'"),
        (b"MQ2,000001,00384" + bytes(368), "should start with b'MQ1"),
        (frame_header(1, (4, 4)).replace(b"0004,0004", b"00x4,0004"), "should be integers"),
        (frame_header(1, (9999, 9999), pixel_depth="U64"), "the header is corrupt"),
    ],
)
def test_unsupported_or_malformed_frame_headers_name_the_problem(tmp_path, header, match):
    path = tmp_path / "bad.mib"
    path.write_bytes(header + bytes(70000))
    with GrowingMibSource(path, idle_timeout_s=0.2) as src:
        with pytest.raises(InputError, match=rf"bad.mib: frame 0: .*{match}"):
            list(src.batches(4))


def test_a_missing_frame_in_a_file_is_reported_not_skipped(tmp_path):
    frames = np.arange(5 * 16, dtype=np.uint16).reshape(5, 4, 4)
    records = encode_frames(frames[:3]) + encode_frames(frames[3:], first_sequence=5)
    (tmp_path / "gap.mib").write_bytes(records)
    got = []
    with GrowingMibSource(tmp_path / "gap.mib", idle_timeout_s=0.2) as src:
        with pytest.raises(InputError, match="frame 3: sequence number 5, expected 4"):
            for batch in src.batches(10):
                got.append(batch.frames)
    np.testing.assert_array_equal(np.concatenate(got), frames[:3])


def test_sequence_numbers_past_six_digits_are_accepted(tmp_path):
    frames = scan_frames(n=5, shape=(4, 4))
    (tmp_path / "long.mib").write_bytes(encode_frames(frames, first_sequence=999_998))
    with GrowingMibSource(tmp_path / "long.mib", n_frames=5, idle_timeout_s=0.2) as src:
        _, got = read_all(src, max_frames=5)
    np.testing.assert_array_equal(got, frames)


def test_a_new_batches_call_resumes_without_repeating_or_skipping(tmp_path):
    frames = np.arange(5 * 16, dtype=np.uint16).reshape(5, 4, 4)
    records = encode_frames(frames[:3]) + encode_frames(frames[3:], first_sequence=5)
    (tmp_path / "gap.mib").write_bytes(records)
    with GrowingMibSource(tmp_path / "gap.mib", idle_timeout_s=0.2) as src:
        first = next(src.batches(2))  # abandon the generator after one batch
        second = next(src.batches(10))  # frame 2; the gap after it is already known
        with pytest.raises(InputError, match="frame 3: sequence number 5"):
            next(src.batches(10))
    assert (first.start, second.start) == (0, 2)
    np.testing.assert_array_equal(np.concatenate([first.frames, second.frames]), frames[:3])


# -- growing files ----------------------------------------------------------------------------


class Writer(threading.Thread):
    """Append ``data`` to ``path`` in chunks of ``chunk`` bytes, ``pause_s`` apart."""

    def __init__(self, path, data, chunk, pause_s=0.005, delay_s=0.0):
        super().__init__(daemon=True)
        self.path, self.data, self.chunk = path, data, chunk
        self.pause_s, self.delay_s = pause_s, delay_s
        self.written = 0

    def run(self):
        time.sleep(self.delay_s)
        with open(self.path, "ab", buffering=0) as f:
            for i in range(0, len(self.data), self.chunk):
                f.write(self.data[i : i + self.chunk])
                self.written = i + len(self.data[i : i + self.chunk])
                time.sleep(self.pause_s)


def scan_frames(n=40, shape=(9, 11), seed=0):
    return np.random.default_rng(seed).poisson(5, (n, *shape)).astype(np.uint16)


def test_growing_file_is_followed_across_partial_frames(tmp_path):
    frames = scan_frames()
    data = encode_frames(frames)
    record = len(data) // len(frames)
    path = tmp_path / "scan.mib"
    (tmp_path / "scan.hdr").write_bytes(acquisition_header(len(frames), scan_shape=(5, 8)))
    writer = Writer(path, data, chunk=int(record * 1.37), delay_s=0.1)  # file appears late
    writer.start()
    with GrowingMibSource(path, idle_timeout_s=2.0, poll_s=0.005) as src:
        _, got = read_all(src, max_frames=8)
        assert src.scan_shape == (5, 8) and src.expected_frames == 40
    writer.join(5)
    np.testing.assert_array_equal(got, frames)


def test_growing_file_yields_frames_before_the_writer_finishes(tmp_path):
    frames = scan_frames(n=20)
    data = encode_frames(frames)
    writer = Writer(tmp_path / "s.mib", data, chunk=len(data) // 10 + 1, pause_s=0.1)
    writer.start()
    with GrowingMibSource(tmp_path / "s.mib", n_frames=20, poll_s=0.005, idle_timeout_s=2) as src:
        first = next(src.batches(100))
        progress = writer.written
        rest = list(src.batches(100))
    writer.join(5)
    assert first.start == 0 and progress < len(data)
    np.testing.assert_array_equal(np.concatenate([first.frames] + [b.frames for b in rest]), frames)


def test_file_without_frame_count_ends_when_it_stops_growing(tmp_path):
    frames = scan_frames(n=12)
    (tmp_path / "s.mib").write_bytes(encode_frames(frames))
    t0 = time.monotonic()
    with GrowingMibSource(tmp_path / "s.mib", idle_timeout_s=0.3, poll_s=0.01) as src:
        _, got = read_all(src)
        assert src.expected_frames is None
    # it waited the idle timeout, and (a generous bound, for a loaded machine) no hang
    assert 0.3 <= time.monotonic() - t0 < 20
    np.testing.assert_array_equal(got, frames)


def test_file_that_stops_growing_early_raises_after_yielding_what_arrived(tmp_path):
    frames = scan_frames(n=10)
    (tmp_path / "s.mib").write_bytes(encode_frames(frames[:6]))
    (tmp_path / "s.hdr").write_bytes(acquisition_header(10))
    got = []
    with GrowingMibSource(tmp_path / "s.mib", idle_timeout_s=0.2, poll_s=0.01) as src:
        with pytest.raises(
            StreamIncomplete, match="no data arrived for 0.2 s after 6 of 10 frames"
        ) as err:
            for batch in src.batches(4):
                got.append(batch.frames)
    assert err.value.frames_received == 6 and err.value.expected == 10
    np.testing.assert_array_equal(np.concatenate(got), frames[:6])


def test_file_cut_inside_a_frame_raises_stream_incomplete(tmp_path):
    frames = scan_frames(n=5)
    data = encode_frames(frames)
    (tmp_path / "s.mib").write_bytes(data[: len(data) - 10])
    with GrowingMibSource(tmp_path / "s.mib", idle_timeout_s=0.2, poll_s=0.01) as src:
        with pytest.raises(StreamIncomplete, match="frame 4 was cut off") as err:
            list(src.batches(10))
    assert err.value.frames_received == 4 and err.value.expected is None


def test_file_that_never_appears(tmp_path):
    with GrowingMibSource(tmp_path / "never.mib", idle_timeout_s=0.2, poll_s=0.02) as src:
        with pytest.raises(StreamIncomplete, match="no frame arrived.*does not exist") as err:
            list(src.batches(4))
    assert err.value.frames_received == 0
    with pytest.raises(InputError, match="does not exist"):
        GrowingMibSource(tmp_path / "no" / "folder.mib")


# -- iterables --------------------------------------------------------------------------------


def test_iterable_of_single_frames_is_gathered_into_batches():
    frames = scan_frames(n=10)
    with IterableSource(iter(frames)) as src:
        batches, got = read_all(src, max_frames=4)
    assert [len(b.frames) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(got, frames)
    assert src.detector_shape == (9, 11) and src.frames_received == 10


def test_iterable_of_batches_and_frame_batches_is_split_not_merged():
    frames = scan_frames(n=12)
    items = [
        frames[:5],
        FrameBatch(5, frames[5:6]),
        frames[6],
        frames[7],
        FrameBatch(8, frames[8:]),
    ]
    batches, got = read_all(IterableSource(items), max_frames=3)
    assert [(b.start, len(b.frames)) for b in batches] == [
        (0, 3),
        (3, 2),
        (5, 1),
        (6, 2),
        (8, 3),
        (11, 1),
    ]
    np.testing.assert_array_equal(got, frames)


def test_iterable_big_endian_frames_come_out_native():
    frames = scan_frames(n=3).astype(">u2")
    _, got = read_all(IterableSource([frames]))
    assert got.dtype == np.uint16 and got.dtype.isnative
    np.testing.assert_array_equal(got, frames)


@pytest.mark.parametrize(
    "items,match",
    [
        ([np.zeros(5)], r"item 0: expected a frame .* got shape \(5,\)"),
        ([np.zeros((2, 3, 4, 5))], r"item 0: expected a frame"),
        ([np.zeros((3, 3)), np.zeros((3, 4))], r"item 1: frame shape \(3, 4\) differs"),
        ([np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint16)], "item 1: dtype uint16 differs"),
        ([np.array([["a"]])], "should be integer or float"),
        (
            [FrameBatch(0, np.zeros((2, 3, 3))), FrameBatch(3, np.zeros((2, 3, 3)))],
            "item 1: FrameBatch starts at frame 3, but 2 frames came before it",
        ),
    ],
)
def test_iterable_rejects_inconsistent_items(items, match):
    with pytest.raises(InputError, match=match):
        list(IterableSource(items).batches(4))


def test_batches_argument_and_frame_batch_are_validated():
    with pytest.raises(InputError, match="max_frames=0 should be >= 1"):
        list(IterableSource([]).batches(0))
    with pytest.raises(InputError, match="should be an integer"):
        list(IterableSource([]).batches(2.5))
    with pytest.raises(InputError, match=r"should be \(b, qy, qx\)"):
        FrameBatch(0, np.zeros((3, 3)))
    assert FrameBatch(4, np.zeros((3, 2, 2))).stop == 7
    with pytest.raises(InputError, match="needs an iterable"):
        IterableSource(5)


# -- open_source ------------------------------------------------------------------------------


@pytest.fixture
def listener():
    """A listening socket on 127.0.0.1 that never accepts: enough for connect() to succeed."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    yield sock.getsockname()[1]
    sock.close()


def test_open_source_dispatches_on_the_spec(tmp_path, listener):
    with open_source(f"merlin://127.0.0.1:{listener}", timeout_s=1) as src:
        assert isinstance(src, MerlinTCPSource) and (src.host, src.port) == ("127.0.0.1", listener)
    file_src = open_source(tmp_path / "a.hdr", idle_timeout_s=1)
    assert isinstance(file_src, GrowingMibSource) and file_src.path == tmp_path / "a.mib"
    assert isinstance(open_source(str(tmp_path / "a.mib")), GrowingMibSource)
    assert isinstance(open_source(f"file://{tmp_path}/a.mib"), GrowingMibSource)
    scan = np.zeros((2, 3, 4, 5), np.uint16)
    _, got = read_all(open_source(scan), max_frames=100)
    assert got.shape == (6, 4, 5)
    gen_src = open_source(f for f in scan[0])
    assert isinstance(gen_src, IterableSource)
    assert open_source(gen_src) is gen_src
    assert isinstance(file_src, FrameSource) and isinstance(gen_src, FrameSource)


@pytest.mark.parametrize(
    "spec,kwargs,match",
    [
        ("merlin://127.0.0.1:99999", {}, "port should be an integer"),
        ("merlin://127.0.0.1:1/x", {}, "expected merlin://HOST"),
        ("tcp://127.0.0.1:1", {}, "unknown scheme 'tcp'"),
        ("scan.blo", {}, "suffix '.blo'"),
        (12, {}, "cannot open a live source from int"),
        ([np.zeros((2, 2))], {"n_frames": 3}, "apply to Merlin and .mib sources only"),
        (np.zeros(4), {}, r"got shape \(4,\)"),
    ],
)
def test_open_source_rejects_what_it_cannot_open(spec, kwargs, match):
    with pytest.raises(InputError, match=match):
        open_source(spec, **kwargs)


def test_connecting_to_nothing_is_an_input_error():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(InputError, match=rf"merlin://127.0.0.1:{port}: cannot connect"):
        MerlinTCPSource("127.0.0.1", port, timeout_s=1)


# -- Merlin TCP against LiberTEM-live's simulator -----------------------------------------------


# The simulator opens the .mib once per frame and never closes it: its warnings, not ours.
ignore_sim_leaks = pytest.mark.filterwarnings(
    "ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)


@ignore_sim_leaks
@pytest.mark.parametrize(
    "name",
    [
        "Single_9_Frame_CounterDepth_12_Rows_256",  # U16
        "Single_9_Frame_CounterDepth_1_Rows_256RAW",  # R64, 1 bit
        "Quad_9_Frame_CounterDepth_6_Rows_256",  # 2x2 chips, U08
    ],
)
def test_merlin_simulator_stream_equals_the_file(tmp_path, merlin_sim, name):
    hdr = copy_sample(name, tmp_path)
    port = merlin_sim(hdr)
    with MerlinTCPSource("127.0.0.1", port, timeout_s=10) as src:
        batches, got = read_all(src, max_frames=4)
        assert src.acquisition_header is not None and src.expected_frames == 9
        assert src.detector_shape == got.shape[1:]
    with GrowingMibSource(hdr, idle_timeout_s=0.2) as src:  # checked against rsciio above
        _, want = read_all(src)
    np.testing.assert_array_equal(got, want)


@ignore_sim_leaks
def test_merlin_simulator_synthetic_scan_and_n_frames(tmp_path, merlin_sim):
    frames = scan_frames(n=60, shape=(144, 144), seed=2)
    mib = tmp_path / "synthetic.mib"
    mib.write_bytes(encode_frames(frames))
    # no .hdr: the simulator writes a minimal acquisition header from nav_shape
    port = merlin_sim(mib, nav_shape=(6, 10))
    with MerlinTCPSource("127.0.0.1", port, timeout_s=10) as src:
        _, got = read_all(src, max_frames=16)
        assert src.expected_frames == 60
    np.testing.assert_array_equal(got, frames)
    with open_source(f"merlin://127.0.0.1:{port}", n_frames=25, timeout_s=10) as src:
        _, got = read_all(src, max_frames=16)
    np.testing.assert_array_equal(got, frames[:25])


# -- Merlin TCP against a faulty peer of our own ------------------------------------------------


def mpx(payload: bytes) -> bytes:
    return b"MPX,%010d," % (len(payload) + 1) + payload


def frame_messages(frames, first_sequence=1):
    records = encode_frames(frames, first_sequence=first_sequence)
    size = len(records) // len(frames)
    return [mpx(records[i : i + size]) for i in range(0, len(records), size)]


FRAMES = scan_frames(n=8, shape=(6, 5), seed=4)
HDR = mpx(acquisition_header(8))


def receive(port, max_frames=3, **kwargs):
    """Receive into a list until the source ends or raises; return (frames, exception)."""
    got = []
    kwargs.setdefault("timeout_s", 2)
    try:
        with MerlinTCPSource("127.0.0.1", port, **kwargs) as src:
            for batch in src.batches(max_frames):
                assert batch.start == sum(len(g) for g in got)
                got.append(batch.frames)
    except Gpu4dError as exc:
        return (np.concatenate(got) if got else np.empty((0, 6, 5), np.uint16)), exc
    return np.concatenate(got), None


def test_peer_stream_with_and_without_acquisition_header(peer):
    got, exc = receive(peer([HDR, *frame_messages(FRAMES)]))
    assert exc is None
    np.testing.assert_array_equal(got, FRAMES)
    # without a header and without n_frames the acquisition ends at a clean disconnect
    got, exc = receive(peer(frame_messages(FRAMES)))
    assert exc is None
    np.testing.assert_array_equal(got, FRAMES)


def test_continuous_mode_ends_at_the_next_acquisition_header(peer):
    continuous = mpx(acquisition_header(0))
    port = peer(
        [continuous, *frame_messages(FRAMES[:5]), continuous, *frame_messages(FRAMES)], hold_s=5
    )
    got, exc = receive(port)
    assert exc is None
    np.testing.assert_array_equal(got, FRAMES[:5])


def test_a_pause_in_the_stream_does_not_hold_back_received_frames(peer):
    # the peer sends 3 frames, then nothing until the test has them: a source that waited for
    # a full batch would only give them at its timeout (30 s), as an incomplete stream
    messages = frame_messages(FRAMES)
    release = threading.Event()
    port = peer([HDR, *messages[:3], release, *messages[3:]])
    with MerlinTCPSource("127.0.0.1", port, timeout_s=30, latency_s=0.05) as src:
        batches = src.batches(100)
        try:
            first = next(batches)
        finally:
            release.set()
        rest = list(batches)
    assert len(first.frames) == 3
    np.testing.assert_array_equal(np.concatenate([first.frames] + [b.frames for b in rest]), FRAMES)


@pytest.mark.parametrize(
    "parts,n_good,match",
    [
        (
            [b"MPY,0000000010,HDR,123456"],
            0,
            r"acquisition header: malformed MPX message prefix b'MPY,",
        ),
        (
            [mpx(b"HDR,\nFrames in Acquisition (Number):\teight\nEnd")],
            0,
            "'Frames in Acquisition \\(Number\\)'='eight' should be an integer",
        ),
        ([mpx(b"XYZ,hello")], 0, "first message should be the acquisition header"),
        ([b"MPX,9999999999,"], 0, "exceeds"),
        (
            [HDR, mpx(frame_header(1, (6, 5), pixel_depth="U12") + bytes(60))],
            0,
            "frame 0: pixel depth 'U12'",
        ),
        (
            [HDR, mpx(encode_frames(FRAMES[:1]) + b"extra")],
            0,
            "frame 0: MPX message carries 449 bytes",
        ),
        (
            [HDR, *frame_messages(FRAMES[:3]), b"MPX;" + frame_messages(FRAMES[3:4])[0][4:]],
            3,
            "frame 3: malformed MPX message prefix",
        ),
        (
            [HDR, *frame_messages(FRAMES[:2]), mpx(b"MQ2" + encode_frames(FRAMES[2:3])[3:])],
            2,
            "frame 2: frame header should start with b'MQ1",
        ),
        (
            [HDR, *frame_messages(FRAMES[:3]), *frame_messages(FRAMES[3:], first_sequence=5)],
            3,
            "frame 3: sequence number 5, expected 4",
        ),
        (
            [
                HDR,
                *frame_messages(FRAMES[:4]),
                *frame_messages(np.zeros((4, 6, 6), np.uint16), first_sequence=5),
            ],
            4,
            "frame 4: MPX message of 456 bytes, but frame 0's was 444; the frame size changed",
        ),
        (
            [
                HDR,
                *frame_messages(FRAMES[:4]),
                *frame_messages(FRAMES[4:].astype(np.uint8), first_sequence=5),
            ],
            4,
            "frame 4: MPX message of",
        ),
    ],
)
def test_malformed_streams_raise_input_error_naming_the_frame(peer, parts, n_good, match):
    got, exc = receive(peer(parts, hold_s=3))
    assert isinstance(exc, InputError), exc
    assert exc.args[0].startswith("merlin://127.0.0.1:")
    assert re_search(match, str(exc))
    np.testing.assert_array_equal(got, FRAMES[:n_good])


def re_search(pattern, text):
    import re

    assert re.search(pattern, text), f"{pattern!r} not in {text!r}"
    return True


def test_same_size_frame_with_other_fixed_fields_is_caught_by_the_header_check(peer):
    # 5x6 instead of 6x5: same message length, different header: must not slip through
    other = frame_messages(np.zeros((4, 5, 6), np.uint16), first_sequence=5)
    got, exc = receive(peer([HDR, *frame_messages(FRAMES[:4]), *other], hold_s=3))
    assert isinstance(exc, InputError)
    assert "frame 4: frame format changed mid-acquisition from 5x6 U16" in str(exc)
    np.testing.assert_array_equal(got, FRAMES[:4])


def test_disconnect_before_the_last_frame_raises_stream_incomplete(peer):
    got, exc = receive(peer([HDR, *frame_messages(FRAMES[:5])]))
    assert isinstance(exc, StreamIncomplete)
    assert (exc.frames_received, exc.expected) == (5, 8)
    assert "the peer closed the connection after 5 of 8 frames" in str(exc)
    np.testing.assert_array_equal(got, FRAMES[:5])


def test_truncated_frame_raises_stream_incomplete_after_the_complete_ones(peer):
    messages = frame_messages(FRAMES)
    got, exc = receive(peer([HDR, *messages[:6], messages[6][:100]]))
    assert isinstance(exc, StreamIncomplete) and exc.frames_received == 6
    assert "frame 6 was cut off after 100 of 459 bytes: the peer closed the connection" in str(exc)
    np.testing.assert_array_equal(got, FRAMES[:6])


def test_silent_peer_times_out_as_stream_incomplete(peer):
    port = peer([HDR, *frame_messages(FRAMES[:2])], hold_s=60)
    t0 = time.monotonic()
    got, exc = receive(port, timeout_s=0.3)
    assert isinstance(exc, StreamIncomplete) and exc.frames_received == 2
    assert "no data arrived for 0.3 s after 2 of 8 frames" in str(exc)
    assert time.monotonic() - t0 < 30  # the idle timeout ended it, not the peer's 60 s hold


def test_next_acquisition_before_the_expected_count_is_incomplete(peer):
    got, exc = receive(
        peer([HDR, *frame_messages(FRAMES[:3]), HDR, *frame_messages(FRAMES)], hold_s=3)
    )
    assert isinstance(exc, StreamIncomplete) and exc.frames_received == 3
    assert "a new acquisition started" in str(exc)


def test_no_acquisition_header_within_the_header_timeout(peer):
    port = peer([], hold_s=5)
    got, exc = receive(port, timeout_s=5, header_timeout_s=0.2)
    assert isinstance(exc, StreamIncomplete) and exc.frames_received == 0
    assert "no frame arrived: no data arrived for 0.2 s" in str(exc)


def test_stream_incomplete_is_a_gpu4d_error():
    exc = StreamIncomplete("x", frames_received=3, expected=None)
    assert isinstance(exc, Gpu4dError) and exc.frames_received == 3 and exc.expected is None
