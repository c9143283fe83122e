"""Test configuration: Keras on the torch backend, and a seeded generator per test."""

import os
import zlib

import numpy as np
import pytest

# Keras 3 must run on the torch backend; this has to be set before keras is first imported.
os.environ.setdefault("KERAS_BACKEND", "torch")


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's name: fresh per test, reproducible per test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
