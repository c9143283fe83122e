"""Test configuration: Keras on the torch backend, and a seeded generator per test."""

import os
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Keras 3 must run on the torch backend; this has to be set before keras is first imported.
os.environ.setdefault("KERAS_BACKEND", "torch")

# Hypothesis profiles: "ci" by default; `--hypothesis-profile=long` for the long run.
_PROFILE = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=200, **_PROFILE)
settings.register_profile("long", max_examples=10_000, **_PROFILE)
settings.load_profile("ci")


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's name: fresh per test, reproducible per test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
