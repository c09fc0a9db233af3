"""Backends: what differs between the CPU and the GPU, chosen once and passed down.

A backend holds the array module (numpy or cupy), the kernel engine (numba CPU kernels or
numba CUDA kernels), the KMeans engine (``gpu4d.kmeans``'s Lloyd; cuML when installed) and the
host/device transfers. Everything above it (``gpu4d.pipeline``) is one code path.

The GPU backend runs in three settings:

* a real GPU: cupy arrays, CUDA kernels, cuML (or, without it, ``gpu4d.kmeans``'s Lloyd on CuPy),
  pinned double-buffered transfers (``device``, which states the stream discipline);
* numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``): the same CUDA kernels run on the CPU
  over numpy arrays that refuse to mix with host arrays, as CuPy's do (``simulated_xp``), and
  the CuPy KMeans code runs on them. This is how CI checks the GPU path;
* no GPU: ``backend="gpu"`` raises BackendUnavailable, ``backend="auto"`` warns and uses the CPU.

Modules: ``cpu`` and ``gpu`` (the two backends), ``device`` (the only code that needs a real GPU:
CuPy, pinned memory, streams), ``simulated_xp`` (the simulator's strict array module); this one
chooses a backend.
"""

from __future__ import annotations

import importlib.util
import warnings

from ..errors import BackendUnavailable, InputError
from .cpu import CpuBackend
from .gpu import GpuBackend

BACKEND_NAMES = ("cpu", "gpu", "auto")
GPU_INSTALL_HINT = (
    "install the GPU extra with: pip install 'gpu4d[gpu]' (CUDA 12 driver needed; a CUDA 13 "
    "CuPy with numba-cuda[cu13] works too, and cuML is optional)"
)

__all__ = [
    "BACKEND_NAMES",
    "CpuBackend",
    "GpuBackend",
    "backend_report",
    "cuda_simulator_enabled",
    "get_backend",
    "gpu_problem",
]


def cuda_simulator_enabled() -> bool:
    """True when numba's CUDA simulator is on (decided when numba is first imported)."""
    from numba import config

    return bool(getattr(config, "ENABLE_CUDASIM", False))


def gpu_problem() -> str | None:
    """Why no real GPU backend can run here, or None if one can.

    "Usable" means ``cupy.cuda.is_available()`` (cupy imports fine on a machine without a
    driver and only fails at the first allocation) and numba's CUDA support. Any CuPy build
    (``cupy-cuda12x``, ``cupy-cuda13x``) will do; cuML is optional (``gpu4d.kmeans.full``).
    """
    if importlib.util.find_spec("cupy") is None:
        return "cupy is not installed"
    try:
        import cupy

        if not cupy.cuda.is_available():
            return "no CUDA driver or device found (cupy.cuda.is_available() is False)"
    except Exception as exc:  # noqa: BLE001 - a broken CUDA install raises many kinds
        return f"cupy cannot reach CUDA ({type(exc).__name__}: {exc})"
    if importlib.util.find_spec("numba_cuda") is None and importlib.util.find_spec("numba.cuda") is None:
        return "numba's CUDA support (numba-cuda) is not installed"
    return None


def get_backend(name: str = "auto", *, warn: bool = True):
    """Choose the backend once: ``"cpu"``, ``"gpu"`` or ``"auto"`` (GPU if usable, else CPU).

    ``"gpu"`` also runs under numba's CUDA simulator; ``"auto"`` never picks the simulator.
    """
    if not isinstance(name, str) or name not in BACKEND_NAMES:
        raise InputError(f"backend must be one of {', '.join(BACKEND_NAMES)}; got {name!r}")
    if name == "cpu":
        return CpuBackend()
    if cuda_simulator_enabled():
        if name == "gpu":
            return GpuBackend(simulated=True)
        problem = "numba's CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1) and auto does not use it"
    else:
        problem = gpu_problem()
        if problem is None:
            return GpuBackend(simulated=False)
    if name == "gpu":
        raise BackendUnavailable(f"backend='gpu' cannot run here: {problem}; {GPU_INSTALL_HINT}")
    if warn:
        warnings.warn(f"backend='auto': no usable GPU ({problem}); using the CPU backend", stacklevel=3)
    return CpuBackend()


def backend_report() -> dict[str, str]:
    """For ``gpu4d info``: each backend, and whether it can run here or why not."""
    problem = gpu_problem()
    report = {"cpu": "usable: " + CpuBackend().describe()}
    if problem is None:
        from .device import describe_kmeans_engine, kmeans_engine

        report["gpu"] = f"usable: numba CUDA kernels, {describe_kmeans_engine(kmeans_engine())}"
    else:
        report["gpu"] = f"not usable: {problem}; {GPU_INSTALL_HINT}"
    if cuda_simulator_enabled():
        report["gpu (simulated)"] = "usable: NUMBA_ENABLE_CUDASIM=1, backend='gpu' runs the simulator"
    report["auto"] = "gpu" if problem is None else "cpu"
    return report
