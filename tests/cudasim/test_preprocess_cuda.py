"""The CUDA preprocessing kernel against the CPU kernel, under numba's CUDA simulator."""

import numpy as np
import pytest

from gpu4d.kernels.preprocess import launch_preprocess_cpu
from gpu4d.preprocessing import NORMALIZATIONS, TRANSFORMS

from ..reference import random_patterns

pytestmark = pytest.mark.cudasim

# float32 tree reduction on the device against a float64 running sum on the CPU
RTOL, ATOL = 1e-5, 1e-7


def kept(shape, masked_radius=2.0):
    yy, xx = np.indices(shape)
    keep = np.hypot(yy - shape[0] / 2, xx - shape[1] / 2) > masked_radius
    return [a.astype(np.int32) for a in np.nonzero(keep)]


def both(raw, shifts, pixels, transform, normalize, threads_per_block):
    from gpu4d.kernels.preprocess_cuda import launch_preprocess_cuda

    ys, xs = pixels
    args = (raw, shifts, ys, xs, TRANSFORMS[transform], NORMALIZATIONS[normalize])
    cpu = np.full((raw.shape[0], ys.size), np.nan, np.float32)
    cuda = np.full_like(cpu, np.nan)
    launch_preprocess_cpu(*args, cpu)
    launch_preprocess_cuda(*args, cuda, threads_per_block=threads_per_block)
    return cpu, cuda


@pytest.mark.parametrize("transform", list(TRANSFORMS))
@pytest.mark.parametrize("normalize", list(NORMALIZATIONS))
def test_every_option(transform, normalize):
    rng = np.random.default_rng(0)
    raw = random_patterns(rng, 3, (9, 13), np.uint16)
    cpu, cuda = both(raw, None, kept((9, 13)), transform, normalize, 8)
    np.testing.assert_allclose(cuda, cpu, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("n, shape, tpb", [(1, (9, 13), 8), (97, (7, 5), 4), (257, (3, 5), 2)])
def test_odd_sizes(n, shape, tpb):
    """Pattern counts 1/97/257 and detectors that are not a multiple of the block size."""
    rng = np.random.default_rng(n)
    raw = random_patterns(rng, n, shape, np.uint8)
    cpu, cuda = both(raw, None, kept(shape, 1.0), "none", "max", tpb)
    np.testing.assert_allclose(cuda, cpu, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_dtypes_with_sub_pixel_shifts(dtype):
    rng = np.random.default_rng(7)
    raw = random_patterns(rng, 5, (11, 9), dtype)
    shifts = rng.uniform(-2, 2, (5, 2)).astype(np.float32)
    cpu, cuda = both(raw, shifts, kept((11, 9)), "sqrt", "l2", 16)
    np.testing.assert_allclose(cuda, cpu, rtol=RTOL, atol=ATOL)


def test_all_zero_patterns_give_zeros():
    raw = np.zeros((3, 9, 7), np.uint16)
    for normalize in NORMALIZATIONS:
        cpu, cuda = both(raw, None, kept((9, 7)), "log1p", normalize, 8)
        assert np.isfinite(cuda).all() and not cuda.any()
        np.testing.assert_array_equal(cuda, cpu)
