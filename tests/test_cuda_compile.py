"""Every CUDA kernel compiles to PTX for an H100 (sm_90), and its float32 build stays float32.

The simulator runs kernels as Python, so it cannot catch what only the compiler rejects (typing,
unsupported features) nor a float32 kernel that silently computes in float64. This test needs
numba-cuda with NVVM (numba-cuda[cu12] or [cu13]) but no GPU, and runs outside the simulator.
float32 only: float64 builds the same code, and ~1 s per compile adds up.
"""

import importlib.util

import pytest

if importlib.util.find_spec("numba_cuda") is None:
    pytest.skip("numba-cuda is not installed", allow_module_level=True)

from grukern import _device

if _device.simulated():
    pytest.skip("compiles for a real GPU; the simulator is on", allow_module_level=True)

from numba import cuda, types
from numba.cuda.cudadrv import nvvm

if not nvvm.is_available():
    pytest.skip("NVVM not found (install numba-cuda[cu12] or [cu13])", allow_module_level=True)

from grukern._backends import _cuda_kernels as kernels

COMPUTE_CAPABILITY = (9, 0)


class _H100:
    compute_capability = COMPUTE_CAPABILITY


@pytest.fixture(autouse=True)
def no_driver_needed(monkeypatch):
    """Device functions ask the current device for its compute capability; without a GPU,
    answer for the H100 the kernels are compiled for."""
    import numba.cuda.dispatcher

    monkeypatch.setattr(numba.cuda.dispatcher, "get_current_device", _H100)


@pytest.mark.parametrize("name", sorted(kernels.signatures(types.float32)))
def test_kernel_compiles_in_float32_without_float64_math(name):
    kernel = getattr(kernels, name)
    signature = kernels.signatures(types.float32)[name]
    ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=COMPUTE_CAPABILITY)
    assert ".entry" in ptx
    assert ".f64" not in ptx, "a float32 kernel computes in float64"
