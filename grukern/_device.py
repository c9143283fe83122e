"""Where arrays live: on the host (NumPy) or on a CUDA device (CuPy).

Device arrays are CuPy arrays. Any other object exposing ``__cuda_array_interface__`` (a torch
CUDA tensor, a numba device array) is wrapped as a CuPy array without copying (`adopt`).

The CUDA backend computes with `array_module()`: CuPy on a GPU (products go to cuBLAS), NumPy
under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1), where there is no device memory and CuPy
cannot run. One backend code path serves both; under the simulator its "device" arrays are NumPy
arrays and its kernels run in numba's simulator.

Nothing here imports CuPy or numba.cuda until a device array or the CUDA backend needs it.
"""

from __future__ import annotations

import sys
from types import ModuleType

import numpy as np

from grukern import _memory


def device_arrays_possible() -> bool:
    """Whether any device array can exist in this process: only once CuPy is imported."""
    return "cupy" in sys.modules


def is_device_array(a) -> bool:
    """Whether a is a CuPy array (no CuPy array can exist before cupy is imported)."""
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(a, cupy.ndarray)


def module_of(a) -> ModuleType:
    """The array library of a: CuPy for a device array, else NumPy."""
    return sys.modules["cupy"] if is_device_array(a) else np


def adopt(name: str, a):
    """a as a numpy.ndarray or a CuPy array; a __cuda_array_interface__ object becomes a CuPy
    view of the same memory. Raises TypeError, naming the argument, for anything else."""
    if type(a) is np.ndarray or isinstance(a, np.ndarray) or is_device_array(a):
        return a
    if hasattr(a, "__cuda_array_interface__"):
        try:
            import cupy
        except ImportError as error:
            raise TypeError(
                f"{name} is a CUDA device array ({type(a).__name__}); grukern takes device arrays "
                "through CuPy, which is not installed (install grukern[cuda12] or grukern[cuda13])"
            ) from error
        return cupy.asarray(a)
    raise TypeError(
        f"{name} must be a numpy.ndarray, got {type(a).__name__} (convert it with "
        "np.asarray(..., dtype=params.dtype)), or a CUDA device array for backend='cuda' "
        "(CuPy, or any object with __cuda_array_interface__)"
    )


def simulated() -> bool:
    """Whether numba's CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1)."""
    from numba.core import config

    return bool(config.ENABLE_CUDASIM)


def array_module() -> ModuleType:
    """The array library of the CUDA backend: CuPy on a GPU, NumPy under the simulator."""
    if simulated():
        return np
    import cupy

    return cupy


def to_host(a) -> np.ndarray:
    """a as a NumPy array: copied from the device if it lives there, else a itself."""
    return a.get() if is_device_array(a) else a


def zeros(shape, dtype, like):
    """Zeros where `like` lives: a CuPy array for a device `like`, else a NumPy array."""
    if is_device_array(like):
        return sys.modules["cupy"].zeros(shape, dtype=dtype)
    return np.zeros(shape, dtype=dtype)


def empty(shape, dtype, like):
    """An uninitialised array where `like` lives: CuPy's for a device `like`, else a NumPy
    array whose large buffers are reused from call to call (_memory)."""
    if is_device_array(like):
        return sys.modules["cupy"].empty(shape, dtype=dtype)
    return _memory.empty(shape, dtype)


def describe(a) -> str:
    """A short description of an array for reprs: dtype and shape, and "on the GPU" for a
    device array (never the values)."""
    where = " on the GPU" if is_device_array(a) else ""
    return f"{a.dtype} {tuple(a.shape)}{where}"
