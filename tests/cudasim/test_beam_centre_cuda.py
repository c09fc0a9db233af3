"""The CUDA beam-centre kernel against the CPU kernel, under numba's CUDA simulator.

Run in its own process: ``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cudasim``. The
simulator runs ~150 threads a second here, so inputs are tiny: odd pattern counts, detectors
and windows that are not a multiple of the block size, 8 or 16 threads per block.
"""

import numpy as np
import pytest
from numba import config

pytestmark = pytest.mark.cudasim

if not config.ENABLE_CUDASIM:
    pytest.skip(
        "CUDA simulator tests: run 'NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cudasim'",
        allow_module_level=True,
    )

from gpu4d import align  # noqa: E402 - after the skip: the CUDA module needs the simulator
from gpu4d.kernels.beam_centre import launch_beam_centre_cpu  # noqa: E402
from gpu4d.kernels.beam_centre_cuda import launch_beam_centre_cuda  # noqa: E402

# Both kernels sum in float64 and store float32: only the order of the additions differs.
ATOL = 1e-5


def beam_patterns(rng, n, shape, dtype):
    """Noisy patterns with a bright blob near the middle and a few hot pixels; pattern 1 of
    three or more is all zero, and float patterns have negative (dark-subtracted) pixels."""
    qy, qx = shape
    yy, xx = np.indices(shape)
    centres = np.array([(qy - 1) / 2, (qx - 1) / 2]) + rng.uniform(-1.5, 1.5, (n, 2))
    raw = rng.poisson(2.0, (n, *shape)).astype(np.float64)
    for i, (cy, cx) in enumerate(centres):
        raw[i] += 120 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0)
    raw[:, rng.integers(0, qy, 3), rng.integers(0, qx, 3)] += 90
    if n > 2:
        raw[1] = 0
    if np.dtype(dtype).kind == "f":
        raw = raw * 0.37 - 0.5
    return np.clip(raw, None, 255).astype(dtype)


def both(raw, centres, radius, threshold, threads_per_block):
    centres = np.atleast_2d(np.asarray(centres, np.float64))
    cpu = np.full((raw.shape[0], 2), -1.0, np.float32)
    cuda = np.full_like(cpu, -1.0)
    launch_beam_centre_cpu(raw, centres, radius, threshold, cpu)
    launch_beam_centre_cuda(
        raw, centres, radius, threshold, cuda, threads_per_block=threads_per_block
    )
    return cpu, cuda


@pytest.mark.parametrize(
    "n, shape, tpb, dtype, threshold",
    [
        (1, (9, 13), 8, np.uint8, 0.2),
        (5, (17, 11), 16, np.uint16, 0.5),
        (5, (9, 13), 16, np.float32, 0.0),
        (97, (9, 13), 8, np.uint16, 0.3),
    ],
)
def test_cuda_equals_cpu(n, shape, tpb, dtype, threshold):
    rng = np.random.default_rng(n + shape[0])
    raw = beam_patterns(rng, n, shape, dtype)
    centre = ((shape[0] - 1) / 2 + 0.3, (shape[1] - 1) / 2 - 0.2)
    cpu, cuda = both(raw, centre, 4.3, threshold, tpb)
    np.testing.assert_allclose(cuda, cpu, atol=ATOL)
    if n > 2:
        assert np.isnan(cuda[1]).all()  # the all-zero pattern
    assert np.isfinite(np.delete(cuda, 1 if n > 2 else [], axis=0)).all()


def test_all_zero_patterns_give_nan():
    raw = np.zeros((3, 9, 13), np.uint8)
    cpu, cuda = both(raw, (4.0, 6.0), 3.5, 0.2, 8)
    assert np.isnan(cuda).all() and np.isnan(cpu).all()


def test_per_pattern_windows_partly_off_the_detector():
    """One window per pattern, some hanging over the detector's edges, one entirely off it."""
    rng = np.random.default_rng(3)
    raw = beam_patterns(rng, 5, (11, 9), np.float32)
    centres = np.array([[0.4, 0.2], [5.0, 4.0], [10.6, 8.9], [2.5, 7.7], [-9.0, 4.0]])
    cpu, cuda = both(raw, centres, 3.2, 0.25, 8)
    np.testing.assert_allclose(cuda, cpu, atol=ATOL)
    assert np.isnan(cuda[[1, 4]]).all()  # pattern 1 is all zero; window 4 misses the detector


def test_measure_centres_cuda_engine():
    rng = np.random.default_rng(5)
    raw = beam_patterns(rng, 2, (9, 13), np.uint16)
    kwargs = {"centre": (4.0, 6.0), "radius": 2.0, "threshold": 0.2}
    cpu = align.measure_centres(raw, "com", engine="cpu", **kwargs)
    cuda = align.measure_centres(raw, "com", engine="cuda", **kwargs)
    assert isinstance(cuda, np.ndarray) and cuda.dtype == np.float32
    np.testing.assert_allclose(cuda, cpu, atol=ATOL)


def test_threads_per_block_must_be_a_power_of_two():
    raw = np.zeros((1, 9, 13), np.uint8)
    out = np.empty((1, 2), np.float32)
    with pytest.raises(ValueError, match="threads_per_block=12 should be a power of two"):
        launch_beam_centre_cuda(raw, np.zeros((1, 2)), 3.0, 0.2, out, threads_per_block=12)
