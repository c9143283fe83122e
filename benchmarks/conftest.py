"""Benchmark configuration: Keras on the torch backend, torch at this machine's core count."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")
