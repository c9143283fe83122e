"""torch tensors <-> grukern's arrays, for grukern.torch and grukern.keras: views both ways
(shared memory, no copies), and which grukern backend runs the tensors of a device."""

from __future__ import annotations

import numpy as np
import torch

import grukern
from grukern import _device


def arrays(*tensors) -> list:
    """Views of tensors (shared memory, strides kept): NumPy arrays of CPU tensors, CuPy
    arrays of CUDA tensors; None stays None."""
    return [
        None
        if t is None
        else _device.adopt("tensor", t.detach())
        if t.is_cuda
        else t.detach().numpy()
        for t in tensors
    ]


def unowned_arrays(*tensors) -> list[np.ndarray]:
    """NumPy arrays over CPU tensors' memory that hold no reference to it or to the tensors:
    valid only while that memory lives, which the caller must make sure of."""
    return [np.asarray(_Unowned(t.detach().numpy())) for t in tensors]


class _Unowned:
    """An array's interface (address, shape, strides, dtype) without the array."""

    def __init__(self, array: np.ndarray):
        self.__array_interface__ = array.__array_interface__


def tensor(array) -> torch.Tensor:
    """A tensor sharing `array`'s memory (a NumPy array, or a CuPy array on its GPU)."""
    if isinstance(array, np.ndarray):
        return torch.from_numpy(array)
    return torch.as_tensor(array, device=torch.device("cuda", array.device.id))


def check_device(device: torch.device, backend: str, caller: str) -> None:
    """Refuse a backend that cannot run tensors on `device`; `caller` names the module."""
    if device.type == "cuda":
        if backend not in ("auto", "cuda"):
            raise ValueError(f"backend {backend!r} runs CPU tensors; the tensors are on {device}")
    elif device.type != "cpu":
        raise NotImplementedError(f"{caller} runs CPU and CUDA tensors, got tensors on {device}")
    elif backend == "cuda":
        raise ValueError("backend 'cuda' needs CUDA tensors; the tensors are on the CPU")


def backend_for(device: torch.device, backend: str) -> str:
    """The grukern backend that runs tensors on `device` (checked by check_device)."""
    if device.type == "cuda":
        return "cuda"
    if backend == "auto":
        return next(name for name in grukern.backends() if name != "cuda")
    return backend
