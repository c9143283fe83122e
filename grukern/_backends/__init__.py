"""The backend registry: which backends exist, which can run here, and why not.

A backend is a module implementing one of the contracts of _contract.py; `resolve` returns it
as a full _contract.Backend (a plain one wrapped in _directions.ByCopies).
Modules are imported only when first used, so importing grukern compiles nothing and needs no GPU.
(This package is `_backends`, not `backends`, because `grukern.backends()` is a public function:
a subpackage of that name would replace it as an attribute of grukern when imported.)
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import importlib.metadata
import importlib.util
import itertools

from grukern import _device
from grukern._backends._contract import Backend
from grukern._backends._directions import ByCopies

# Fastest first: "auto" resolves to the first available one.
_PREFERENCE = ("cuda", "numba", "numpy")

_MODULES = {
    "numpy": "grukern._backends.numpy_ref",
    "numba": "grukern._backends.numba_cpu",
    "cuda": "grukern._backends.cuda",
}
# The modules that implement the full contract themselves; the others are plain.
_FULL = {"numba"}

CUDA_ALGORITHMS = ("auto", "standard", "persistent")
_cuda_algorithm = contextvars.ContextVar("grukern_cuda_algorithm", default="auto")


class BackendUnavailableError(RuntimeError):
    """A known backend cannot run on this machine; the message says what is missing."""


def backends() -> list[str]:
    """Names of the backends usable on this machine, fastest first (always includes "numpy")."""
    return [name for name in _PREFERENCE if unavailable_reason(name) is None]


def known_backends() -> tuple[str, ...]:
    return (*_PREFERENCE, "auto")


@functools.cache
def unavailable_reason(name: str) -> str | None:
    """None if backend `name` can run here, else a sentence saying what is missing."""
    if name == "cuda":
        return _cuda_unavailable_reason()
    if name == "numba":
        missing = [m for m in ("numba", "scipy") if importlib.util.find_spec(m) is None]
        if missing:
            return f"{' and '.join(missing)} not installed (pip install {' '.join(missing)})"
    return None


def resolve(name: str) -> tuple[str, Backend]:
    """The (name, backend) of backend `name`; "auto" picks the fastest available one."""
    if isinstance(name, str) and name in _resolved:
        return _resolved[name]
    if not isinstance(name, str) or name not in known_backends():
        raise ValueError(f"backend must be one of {list(known_backends())}, got {name!r}")
    requested = name
    if name == "auto":  # the simulated GPU runs, but is never the fastest
        name = next(n for n in backends() if n != "cuda" or not _device.simulated())
    reason = unavailable_reason(name)
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {reason}")
    module = importlib.import_module(_MODULES[name])
    _resolved[requested] = name, module if name in _FULL else ByCopies(module)
    return _resolved[requested]


# Successful resolutions (availability is fixed for the life of the process).
_resolved: dict[str, tuple[str, Backend]] = {}


@contextlib.contextmanager
def cuda_algorithm(name: str):
    """Within the block, backend="cuda" runs its forward and backward with algorithm `name`.

    "auto" (the default) runs "standard", measured faster than "persistent" at every size on
    an H200 (docs/cuda.md); "standard" always works; "persistent" raises ValueError when the
    problem does not fit. The setting is per thread and per asyncio task (a context variable),
    and is restored when the block ends:

        with grukern.cuda_algorithm("standard"):
            y, h_n = grukern.forward(x, params, backend="cuda")
    """
    if name not in CUDA_ALGORITHMS:
        raise ValueError(f"cuda_algorithm must be one of {list(CUDA_ALGORITHMS)}, got {name!r}")
    token = _cuda_algorithm.set(name)
    try:
        yield
    finally:
        _cuda_algorithm.reset(token)


def cuda_algorithm_in_effect() -> str:
    """The algorithm set by the innermost cuda_algorithm() block, or "auto"."""
    return _cuda_algorithm.get()


def _cuda_unavailable_reason() -> str | None:
    install_hint = "install grukern[cuda12] or grukern[cuda13] to match the CUDA driver"
    if importlib.util.find_spec("numba_cuda") is None:
        return f"numba-cuda is not installed ({install_hint})"
    if _device.simulated():  # numba's CUDA simulator: NumPy does the products, no CuPy needed
        return None
    if importlib.util.find_spec("cupy") is None:
        return f"CuPy is not installed ({install_hint})"
    incompatible = _numba_cuda_numpy_conflict()
    if incompatible is not None:
        return incompatible
    from numba import cuda

    if not cuda.is_available():
        return "numba-cuda finds no CUDA GPU or driver on this machine"
    return None


# The last numba-cuda release that registers an overload of np.row_stack, which NumPy 2.5
# removed: with NumPy >= 2.5 its first kernel compilation fails (NVIDIA/numba-cuda#907, which
# its maintainers will not fix).
_NUMBA_CUDA_WITHOUT_NUMPY_2_5 = (0, 30, 4)


def _numba_cuda_numpy_conflict() -> str | None:
    """Why this numba-cuda cannot compile with this NumPy, or None."""
    import numpy as np

    numba_cuda = _release(importlib.metadata.version("numba-cuda"))
    if hasattr(np, "row_stack") or numba_cuda > _NUMBA_CUDA_WITHOUT_NUMPY_2_5:
        return None
    return (
        f"numba-cuda {importlib.metadata.version('numba-cuda')} cannot compile kernels with NumPy "
        f"{np.__version__}, which removed np.row_stack (NVIDIA/numba-cuda#907): install "
        "numpy<2.5 (grukern's cuda12 and cuda13 extras ask for it)"
    )


def _release(version: str) -> tuple[int, ...]:
    """The leading numeric release of a version string: "0.30.4.dev1" -> (0, 30, 4)."""
    numbers = []
    for part in version.split(".")[:3]:
        digits = "".join(itertools.takewhile(str.isdigit, part))
        if not digits:
            break
        numbers.append(int(digits))
    return tuple(numbers)
