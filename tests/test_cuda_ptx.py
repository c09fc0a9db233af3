"""Every CUDA kernel compiled to PTX for an H100/H200 (sm_90), without a GPU.

numba's CUDA simulator runs kernels as Python and checks no types; the real compiler does (it
caught ``math.floor`` returning a float in the preprocess kernel). Needs numba-cuda's compiler
libraries (NVVM, NVRTC: ``pip install 'gpu4d[cuda-check]'``); skipped where they are missing.
Also checks that the preprocess kernel computes in float32 only (no float64 instruction).
"""

import re
import types

import pytest

from gpu4d.backend import cuda_simulator_enabled

SM90 = (9, 0)


def compiler_problem() -> str | None:
    if cuda_simulator_enabled():
        return "the CUDA simulator is on"
    try:
        from numba import cuda

        def probe(out):
            out[0] = 1.0

        cuda.compile_ptx(probe, "void(float32[:])", cc=SM90)
    except Exception as exc:  # noqa: BLE001 - a missing library raises many kinds
        return f"numba-cuda cannot compile PTX here ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return None


PROBLEM = compiler_problem()
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=f"{PROBLEM}; pip install 'gpu4d[cuda-check]'")


@pytest.fixture(autouse=True)
def no_device_needed(monkeypatch):
    """Device functions ask the current device for its compute capability: say sm_90."""
    import numba.cuda.dispatcher

    monkeypatch.setattr(numba.cuda.dispatcher, "get_current_device",
                        lambda: types.SimpleNamespace(compute_capability=SM90))


def kernels():
    from numba import types as t

    from gpu4d.kernels.beam_centre_cuda import beam_centre_cuda_kernel
    from gpu4d.kernels.blur_cuda import blur_cuda_kernel
    from gpu4d.kernels.label_sums_cuda import label_sums_cuda_kernel
    from gpu4d.kernels.lloyd_cuda import assign_and_sum_cuda_kernel
    from gpu4d.kernels.preprocess_cuda import preprocess_cuda_kernel

    def a(dtype, ndim, layout="C"):
        return t.Array(dtype, ndim, layout)

    pre = (a(t.float32, 2), a(t.int32, 1), a(t.int32, 1), t.int64, t.int64, t.boolean)
    blur_rest = (a(t.float32, 2), t.boolean, a(t.float32, 2), a(t.float32, 1), a(t.float32, 3))  # shifts .. out
    return {
        "preprocess uint8": (preprocess_cuda_kernel(256), (a(t.uint8, 3), *pre, a(t.float32, 2))),
        "preprocess uint16, strided out": (preprocess_cuda_kernel(256), (a(t.uint16, 3), *pre, a(t.float32, 2, "A"))),
        "preprocess float32": (preprocess_cuda_kernel(256), (a(t.float32, 3), *pre, a(t.float32, 2))),
        "label sums float32": (label_sums_cuda_kernel(), (a(t.float32, 2), a(t.int32, 2), a(t.float64, 2), a(t.float64, 1), t.int64)),
        "label sums uint8": (label_sums_cuda_kernel(), (a(t.uint8, 2), a(t.int32, 2), a(t.float64, 2), a(t.float64, 1), t.int64)),
        "assign and sum": (assign_and_sum_cuda_kernel(), (a(t.float32, 2), a(t.float32, 1), a(t.float32, 2), a(t.int32, 1), a(t.float64, 2), a(t.int64, 1))),
        "beam centre": (beam_centre_cuda_kernel(128), (a(t.uint16, 3), a(t.float64, 2), t.float64, t.float64, a(t.float32, 2))),
        "blur uint8": (blur_cuda_kernel(), (a(t.uint8, 3), *blur_rest)),
        "blur float32": (blur_cuda_kernel(), (a(t.float32, 3), *blur_rest)),
    }


FLOAT64_OPS = re.compile(r"\b(?:add|sub|mul|fma|div|sqrt|max|min|abs)(?:\.[a-z]+)*\.f64\b|\bcvt(?:\.[a-z]+)*\.f64\b")


@pytest.mark.parametrize("name", [
    "preprocess uint8", "preprocess uint16, strided out", "preprocess float32", "label sums float32",
    "label sums uint8", "assign and sum", "beam centre", "blur uint8", "blur float32",
])
def test_kernel_compiles_to_ptx(name):
    from numba import cuda

    kernel, signature = kernels()[name]
    ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=SM90)
    assert ".entry" in ptx
    float64 = FLOAT64_OPS.findall(ptx)
    if name.startswith(("preprocess", "blur")):
        assert float64 == [], f"float64 instructions in the float32 {name} kernel: {sorted(set(float64))}"
    elif name.startswith("label sums"):
        assert any("add" in op for op in float64)  # the sums are float64 (and the regex sees them)
