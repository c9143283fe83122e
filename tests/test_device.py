"""Host and device arrays (grukern._device) and their checks, without a GPU."""

import importlib.util

import numpy as np
import pytest

import grukern
from grukern import _device


class _FakeDeviceArray:
    """Looks like a CUDA array to duck typing; no GPU memory behind it."""

    @property
    def __cuda_array_interface__(self):
        return {"shape": (2, 3), "typestr": "<f8", "data": (0, False), "version": 3}


def test_numpy_arrays_are_host_arrays():
    a = np.zeros(3)
    assert not _device.is_device_array(a)
    assert _device.adopt("x", a) is a
    assert _device.to_host(a) is a
    assert type(_device.zeros((2,), np.float32, like=a)) is np.ndarray


def test_adopt_names_the_argument_for_a_non_array():
    with pytest.raises(
        TypeError, match=r"h0 must be a numpy.ndarray, got list.*or a CUDA device array"
    ):
        _device.adopt("h0", [1.0, 2.0])


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_a_device_array_without_cupy_says_what_is_missing():
    with pytest.raises(TypeError, match=r"x is a CUDA device array.*CuPy.*not installed"):
        _device.adopt("x", _FakeDeviceArray())
    params = grukern.init_params(3, 2)
    with pytest.raises(TypeError, match=r"dy is a CUDA device array"):
        tape = grukern.forward_train(np.zeros((2, 1, 3), np.float32), params)[2]
        grukern.backward(tape, dy=_FakeDeviceArray())


def test_host_params_stay_put_on_the_way_to_the_host():
    params = grukern.init_params(3, 2)
    assert not params.on_device
    assert params.to_host() is params


def test_params_must_share_one_place():
    params = grukern.init_params(3, 2)
    with pytest.raises(
        TypeError, match=r"GRUParams.b_hh must be a numpy.ndarray, got list \(or a CuPy"
    ):
        grukern.GRUParams(params.w_ih, params.w_hh, params.b_ih, list(params.b_hh))


@pytest.mark.parametrize(
    ("numba_cuda", "numpy_has_row_stack", "refused"),
    [("0.30.4", False, True), ("0.30.4", True, False), ("0.31.0", False, False)],
)
def test_a_numba_cuda_that_cannot_compile_with_this_numpy_is_refused_by_name(
    monkeypatch, numba_cuda, numpy_has_row_stack, refused
):
    """numba-cuda ≤ 0.30.4 registers np.row_stack, which NumPy 2.5 removed: its first kernel
    compilation fails with an AttributeError deep inside numba. The backend says so up front."""
    import importlib.metadata

    from grukern import _backends

    monkeypatch.setattr(importlib.metadata, "version", lambda name: numba_cuda)
    if numpy_has_row_stack:
        monkeypatch.setattr(np, "row_stack", np.vstack, raising=False)
    else:
        monkeypatch.delattr(np, "row_stack", raising=False)
    reason = _backends._numba_cuda_numpy_conflict()
    if refused:
        assert f"numba-cuda {numba_cuda} cannot compile kernels with NumPy" in reason
        assert "install numpy<2.5" in reason
    else:
        assert reason is None


def test_release_reads_the_leading_numbers_of_a_version():
    from grukern._backends import _release

    assert _release("0.30.4") == (0, 30, 4)
    assert _release("0.30.4.dev1+g12") == (0, 30, 4)
    assert _release("1.0rc1") == (1, 0)


@pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None, reason="needs numba-cuda")
@pytest.mark.parametrize("name", [b"NVIDIA H200", "NVIDIA H200"])
def test_the_gpu_name_is_text_whichever_type_numba_cuda_returns(monkeypatch, name):
    """numba-cuda 0.30 returns the device name as str, older releases as bytes."""
    from numba import cuda

    from grukern.results import gpu_name

    class Device:
        pass

    device = Device()
    device.name = name
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "get_current_device", lambda: device)
    assert gpu_name() == "NVIDIA H200"
