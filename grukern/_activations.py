"""σ for NumPy arrays: the reference's gates and the classic model's output layer."""

from __future__ import annotations

import numpy as np


def sigmoid(a: np.ndarray) -> np.ndarray:
    """σ(a) = 1 / (1 + e^(-a)), evaluated with e^(-|a|) ≤ 1 so that no exp overflows."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1 / (1 + e), e / (1 + e))
