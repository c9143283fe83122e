"""The backend registry: which backends exist, which can run here, and why not.

A backend is a module exposing exactly forward, forward_train and backward (DESIGN.md §3).
Modules are imported only when first used, so importing grukern compiles nothing and needs no GPU.
(This package is `_backends`, not `backends`, because `grukern.backends()` is a public function:
a subpackage of that name would replace it as an attribute of grukern when imported.)
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from types import ModuleType

# Fastest first: "auto" resolves to the first available one.
_PREFERENCE = ("cuda", "numba", "numpy")

_MODULES = {
    "numpy": "grukern._backends.numpy_ref",
    "numba": "grukern._backends.numba_cpu",
}


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


def resolve(name: str) -> tuple[str, ModuleType]:
    """The (name, module) of backend `name`; "auto" picks the fastest available one."""
    if isinstance(name, str) and name in _resolved:
        return _resolved[name]
    if not isinstance(name, str) or name not in known_backends():
        raise ValueError(f"backend must be one of {list(known_backends())}, got {name!r}")
    requested = name
    if name == "auto":
        name = backends()[0]
    reason = unavailable_reason(name)
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {reason}")
    _resolved[requested] = name, importlib.import_module(_MODULES[name])
    return _resolved[requested]


# Successful resolutions (availability is fixed for the life of the process).
_resolved: dict[str, tuple[str, ModuleType]] = {}


def _cuda_unavailable_reason() -> str | None:
    install_hint = "install grukern[cuda12] or grukern[cuda13] to match the CUDA driver"
    if importlib.util.find_spec("numba_cuda") is None:
        return f"numba-cuda is not installed ({install_hint})"
    if importlib.util.find_spec("cupy") is None:
        return f"CuPy is not installed ({install_hint})"
    from numba import cuda

    if not cuda.is_available():
        return "numba-cuda finds no CUDA GPU or driver on this machine"
    return "grukern's CUDA kernels are not part of this release yet"
