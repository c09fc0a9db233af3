"""Every sample file users bring (../shared/data) through ``open_dataset`` and ``cluster``,
against what HyperSpy/RosettaSciIO load and scikit-learn fits on the same patterns: the 4-D
files as they are, the frame lists (TVIPS, the DE ``.mrc`` movie, the 9-frame ``.mib`` files
of 12 bits and of a quad detector, a TIA series) with a scan shape (``scan_shape=``).

ARINA and py4DSTEM files, and ``--scan`` itself, are tested with the readers
(``tests/test_readers.py``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.cluster import KMeans

import gpu4d

from .helpers import sample_path
from .reference import preprocess_reference

#: (file under shared/data, its (ny, nx, qy, qx) shape as the data README gives it)
FOUR_D_SAMPLES = [
    ("blockfile/test1.blo", (3, 2, 144, 144)),
    ("blockfile/test2.blo", (2, 3, 5, 5)),
    ("topspin/topspin_test_A.app5", (2, 5, 14, 12)),
    ("topspin/topspin_test_B.app5", (3, 7, 31, 26)),
    ("quantumdetector/001_4x2_6bit.mib", (2, 4, 256, 256)),
    ("quantumdetector/002_4x2_6bit_roi128.mib", (2, 4, 128, 256)),
    ("quantumdetector/002_merlin_test_roi_sig256x128_nav4x2_hot_pixel_52x_39y.mib", (2, 4, 128, 256)),
]


def hyperspy_patterns(path) -> np.ndarray:
    """The file's 4-D data as HyperSpy loads it (the 4-D element of a list), native order."""
    import hyperspy.api as hs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = hs.load(str(path))
    if isinstance(loaded, list):
        loaded = max(loaded, key=lambda s: s.data.ndim)  # the 4-D (or frame-list) element
    data = np.asarray(loaded.data)
    return data.astype(data.dtype.newbyteorder("="))


#: Frame lists (no scan shape recorded): (file, the (ny, nx) it is read as, (qy, qx)).
FRAME_SAMPLES = [
    ("tvips/test_tvips_2345_000.tvips", (2, 3), (4, 5)),
    ("tvips/test_tvips_2233_000.tvips", (2, 2), (3, 3)),
    ("mrc_de_roi_scan/ROI_Random_Scan_movie.mrc", (12, 29), (16, 16)),
    ("quantumdetector/Quad_9_Frame_CounterDepth_6_Rows_256.mib", (3, 3), (512, 512)),
    ("quantumdetector/Single_9_Frame_CounterDepth_12_Rows_256.mib", (3, 3), (256, 256)),
    ("tia/128x128x5-diffraction_preview.emi", (1, 5), (128, 128)),
]
SAMPLES = [(name, shape, None) for name, shape in FOUR_D_SAMPLES] + [
    (name, (*scan, *detector), scan) for name, scan, detector in FRAME_SAMPLES
]


@pytest.fixture(params=SAMPLES, ids=[name.split("/")[-1] for name, _, _ in SAMPLES])
def sample(request):
    """(path, (ny, nx, qy, qx), the scan_shape to give or None)."""
    name, shape, scan_shape = request.param
    return sample_path(name), shape, scan_shape


def test_open_dataset_reads_the_patterns_hyperspy_reads(sample):
    path, shape, scan_shape = sample
    dataset = gpu4d.open_dataset(path, scan_shape=scan_shape)
    assert dataset.shape == shape and dataset.source == str(path)
    want = hyperspy_patterns(path).reshape(shape)  # frames fill the scan row by row
    assert dataset.dtype == want.dtype
    # in batches of 1, 3 and all patterns: the same patterns in scan order
    for size in (1, 3, dataset.n_patterns):
        got = np.concatenate([batch for _, batch in dataset.batches(size)])
        assert got.dtype.isnative
        np.testing.assert_array_equal(got.reshape(shape), want)


def test_cluster_a_sample_file(sample, file_hash):
    path, shape, scan_shape = sample
    before = file_hash(path)
    k = 2
    # full-dimensional KMeans on the untransformed, unaligned patterns as the file holds them
    # (no detector offset subtracted, no blur): the scikit-learn fit below
    result = gpu4d.cluster(
        path, k, mask="none", n_init=10, scan_shape=scan_shape, exact=True, transform="none", align=None,
        offset=None, blur="none",
    )
    raw = hyperspy_patterns(path).reshape(-1, *shape[2:])
    features = preprocess_reference(raw, np.zeros(shape[2:], bool), "none", "max")
    assert result.labels.shape == shape[:2] and result.centroids.shape == (k, *shape[2:])
    labels = result.labels.ravel()
    # a KMeans fit of these patterns: as good as scikit-learn's (a few patterns; several
    # labelings can tie, so the objective is compared), each pattern nearest its own centroid
    reference = KMeans(k, n_init=10, random_state=0).fit(features)
    assert result.inertia <= reference.inertia_ * (1 + 1e-4) + 1e-6
    centroids = result.centroids.reshape(k, -1).astype(np.float64)
    distances = ((features[:, None, :] - centroids[None]) ** 2).sum(-1)
    np.testing.assert_allclose(distances[np.arange(len(labels)), labels], distances.min(1), rtol=1e-4, atol=1e-6)
    for label in range(k):
        members = labels == label
        if members.any():
            np.testing.assert_allclose(result.mean_patterns[label], raw[members].mean(0), rtol=1e-5, atol=1e-4)
    assert result.cluster_sizes.sum() == raw.shape[0]
    assert file_hash(path) == before, "gpu4d must not modify its input"


def test_reader_option_reads_a_renamed_blockfile(tmp_path, run_cli):
    """``--reader`` names the format of a file whose extension does not."""
    original = sample_path("blockfile/test2.blo")
    renamed = tmp_path / "scan.dat"
    renamed.write_bytes(original.read_bytes())

    refused = run_cli("cluster", renamed, "-k", "2", "--out", tmp_path / "no", "-q")
    assert refused.code == 2
    assert f"{renamed}: unknown file format '.dat'" in refused.err and "--reader" in refused.err

    dataset = gpu4d.open_dataset(renamed, reader="Blockfile")
    np.testing.assert_array_equal(
        dataset.read_patterns(0, dataset.n_patterns), gpu4d.open_dataset(original).read_patterns(0, 6)
    )
    runs = {}
    for name, path, extra in (("renamed", renamed, ["--reader", "Blockfile"]), ("original", original, [])):
        out = tmp_path / name
        run = run_cli("cluster", path, "-k", "2", "--mask", "none", "--out", out, "-q", "--no-figures", *extra)
        assert run.code == 0, run.err
        runs[name] = out
    for file in ("labels.npy", "centroids.npy", "mean_patterns.npy"):
        np.testing.assert_array_equal(np.load(runs["renamed"] / file), np.load(runs["original"] / file))


def test_five_dimensional_prismatic_file_is_refused_with_its_shape():
    """Si100_4D.emd holds two depth slices of a 4-D scan (5-D): gpu4d says so, in one line."""
    path = sample_path("emd/Si100_4D.emd")
    with pytest.raises(gpu4d.InputError, match=r"\(2, 11, 11, 8, 8\)") as error:
        gpu4d.open_dataset(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "name, shape",
    [
        ("quantumdetector/Single_1_Frame_CounterDepth_24_Rows_256.mib", (256, 256)),
        ("digitalmicrograph/test_diffraction_pattern.dm3", (87, 87)),
        ("tia/64x64_diffraction_acquire.emi", (64, 64)),
    ],
    ids=["24-bit mib", "dm3", "tia"],
)
def test_a_single_pattern_is_refused_in_one_line(name, shape):
    """Files holding one diffraction pattern (the 24-bit Merlin frame, a DigitalMicrograph and a
    TIA image): not a scan, and gpu4d says so, naming the file and its shape."""
    path = sample_path(name)
    with pytest.raises(gpu4d.InputError) as error:
        gpu4d.open_dataset(path)
    message = str(error.value)
    assert message.startswith(f"{path}: data has shape {shape} (a single pattern); gpu4d needs a 4D-STEM scan")
    assert "\n" not in message
