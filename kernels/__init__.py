"""Custom numba kernels, each compiled for the CPU (numba.njit) and the GPU (numba.cuda.jit).

Installed as ``gpu4d.kernels``. CUDA kernels are built lazily, so importing this package needs
neither a GPU nor numba's CUDA support.
"""
