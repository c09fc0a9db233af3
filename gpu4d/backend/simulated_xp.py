"""A strict stand-in for CuPy under numba's CUDA simulator: numpy whose arrays know they are on
the "device".

Under the simulator the GPU backend's arrays are numpy arrays, so code that mixes host and
device arrays (``host + device``, ``np.where(device, host, ...)``) would run there and fail
only on a real GPU, where CuPy raises ``TypeError``. Here device arrays are ``DeviceArray``
(an ndarray subclass) made by ``strict_numpy`` (the simulated backend's ``xp``) and
``to_device``; an operation that mixes one with a plain (host) numpy array raises
``HostDeviceMixError``, as CuPy would. ``xp.asarray`` / ``to_device`` are the transfers
host -> device, ``.get()`` / ``to_host`` the transfers back.

What it cannot see: numpy reading a device array implicitly (``np.asarray(device)``, a host
array assigned from a device one), which CuPy refuses too; the GPU tests cover those.
"""

from __future__ import annotations

import types

import numpy as np

#: Functions that take host arrays on purpose: CuPy's transfers host -> device.
TRANSFERS = frozenset({"asarray", "array", "ascontiguousarray", "asanyarray"})


class HostDeviceMixError(TypeError):
    """A host (numpy) array met a device array in one operation."""


class DeviceArray(np.ndarray):
    """A numpy array standing in for a CuPy array: mixing it with host arrays raises."""

    def get(self) -> np.ndarray:
        """A host copy (CuPy's ``ndarray.get``)."""
        return np.array(self.view(np.ndarray), copy=True)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _refuse_host(f"numpy.{ufunc.__name__}", inputs + tuple(kwargs.get("out", ()) or ()))
        inputs = tuple(_plain(a) for a in inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(_plain(a) for a in kwargs["out"])
        result = getattr(ufunc, method)(*inputs, **kwargs)
        return _on_device(result)

    def __array_function__(self, func, types_, args, kwargs):
        _refuse_host(f"numpy.{func.__name__}", tuple(args) + tuple(kwargs.values()))
        result = func._implementation(*_plain_tree(args), **_plain_tree(kwargs))
        return _on_device(result)


def _is_host(value) -> bool:
    return type(value) is np.ndarray and value.ndim > 0  # numpy scalars and 0-d are fine, as in CuPy


def _refuse_host(name, values) -> None:
    for value in values:
        if isinstance(value, (list, tuple)):
            _refuse_host(name, value)
        elif _is_host(value):
            raise HostDeviceMixError(
                f"{name}: a host (numpy) array of shape {value.shape} was mixed with device arrays; "
                "move it with backend.to_device / xp.asarray (CuPy raises TypeError here)"
            )


def _plain(value):
    return value.view(np.ndarray) if isinstance(value, DeviceArray) else value


def _plain_tree(value):
    if isinstance(value, tuple):
        return tuple(_plain_tree(v) for v in value)
    if isinstance(value, list):
        return [_plain_tree(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain_tree(v) for k, v in value.items()}
    return _plain(value)


def _on_device(result):
    if isinstance(result, np.ndarray) and not isinstance(result, DeviceArray):
        return result.view(DeviceArray)
    if isinstance(result, tuple):
        return type(result)(*(_on_device(r) for r in result)) if hasattr(result, "_fields") else tuple(
            _on_device(r) for r in result
        )
    return result


def to_device(array) -> DeviceArray:
    """The simulated transfer host -> device (a copy, as on a GPU)."""
    if isinstance(array, DeviceArray):
        return array
    return np.array(array, copy=True).view(DeviceArray)


def to_host(array) -> np.ndarray:
    """The simulated transfer device -> host."""
    if isinstance(array, DeviceArray):
        return array.get()
    return np.asarray(array)


class _StrictModule(types.ModuleType):
    """numpy (or one of its submodules) whose functions give DeviceArrays and refuse host arrays."""

    def __init__(self, module):
        super().__init__(module.__name__)
        self._module = module

    def __getattr__(self, name):
        value = getattr(self._module, name)
        if isinstance(value, types.ModuleType) and value.__name__.startswith("numpy"):
            return _StrictModule(value)
        if isinstance(value, type) or not callable(value):
            return value  # dtypes, classes, constants
        if name in TRANSFERS:
            return lambda *args, **kwargs: _on_device(value(*_plain_tree(args), **_plain_tree(kwargs)))

        def strict(*args, **kwargs):
            _refuse_host(f"xp.{name}", tuple(args) + tuple(kwargs.values()))
            return _on_device(value(*_plain_tree(args), **_plain_tree(kwargs)))

        return strict


def strict_numpy():
    """The simulated backend's array module (see the module)."""
    return _StrictModule(np)
