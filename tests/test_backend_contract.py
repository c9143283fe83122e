"""Every backend module against its contract (grukern/_backends/_contract.py): the same
functions with the same arguments, nothing else public, and what resolve() returns is full."""

import importlib
import importlib.util
import inspect

import pytest

import grukern
from grukern import _backends
from grukern._backends import _contract

FUNCTIONS = ("forward", "forward_train", "backward")


def _parameters(function) -> list[tuple]:
    """(name, kind, default) of each parameter, without the Protocol's self."""
    parameters = inspect.signature(function).parameters.values()
    return [(p.name, p.kind, p.default) for p in parameters if p.name != "self"]


def _module(name: str):
    module_name = _backends._MODULES[name]
    if name == "cuda" and importlib.util.find_spec("numba_cuda") is None:
        pytest.skip("the CUDA backend's module needs numba-cuda to import")
    return importlib.import_module(module_name)


@pytest.mark.parametrize("name", list(_backends._MODULES))
def test_each_backend_module_implements_its_contract(name):
    module = _module(name)
    contract = _contract.Backend if name in _backends._FULL else _contract.PlainBackend
    for function in FUNCTIONS:
        assert _parameters(getattr(module, function)) == _parameters(getattr(contract, function)), (
            f"{name}.{function}"
        )
    public = {
        key
        for key, value in vars(module).items()
        if not key.startswith("_") and getattr(value, "__module__", None) == module.__name__
    }
    assert public == set(FUNCTIONS), f"{name} defines public names beyond the contract"


@pytest.mark.parametrize("name", grukern.backends())
def test_resolve_returns_a_full_backend(name):
    _, backend = _backends.resolve(name)
    for function in FUNCTIONS:
        assert _parameters(getattr(backend, function)) == _parameters(
            getattr(_contract.Backend, function)
        ), f"{name}.{function}"
