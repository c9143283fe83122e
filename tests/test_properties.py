"""Property-based agreement: every backend against the reference on random problems.

Profiles (tests/conftest.py): "ci" (the default, 200 examples) and "long" (10 000 examples):
    python -m pytest tests/test_properties.py --hypothesis-profile=long
"""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import grukern
from tests.helpers import PADDING_GARBAGE, assert_grads_close, fill_padding, tolerance

BACKENDS = grukern.backends()


@st.composite
def problems(draw):
    T = draw(st.integers(0, 40))
    B = draw(st.integers(1, 9))
    I = draw(st.integers(1, 40))
    H = draw(st.integers(1, 40))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    reset_after = draw(st.booleans())
    batch_first = draw(st.booleans())
    with_h0 = draw(st.booleans())
    with_lengths = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    params = grukern.init_params(
        I, H, dtype=dtype, seed=int(rng.integers(2**31)), reset_after=reset_after
    )

    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)

    x = normal(B, T, I) if batch_first else normal(T, B, I)
    dy = normal(B, T, H) if batch_first else normal(T, B, H)
    h0 = normal(B, H) if with_h0 else None
    lengths = rng.integers(0, T + 1, size=B) if with_lengths else None
    if with_lengths:  # padding holds what the draw says: the random values, or garbage
        padding = draw(st.sampled_from([None, 0.0, *PADDING_GARBAGE]))
        if padding is not None:
            x = fill_padding(x, lengths, padding, batch_first=batch_first)
            dy = fill_padding(dy, lengths, padding, batch_first=batch_first)
    return params, x, h0, dy, normal(B, H), batch_first, lengths


def _run(backend, params, x, h0, dy, dh_n, batch_first, lengths):
    y, h_n, tape = grukern.forward_train(
        x, params, h0, backend=backend, batch_first=batch_first, lengths=lengths
    )
    return y, h_n, grukern.backward(tape, dy=dy, dh_n=dh_n)


@given(problems())
def test_every_backend_agrees_with_the_reference(problem):
    params, x, _, _, _, batch_first, _ = problem
    T = x.shape[1] if batch_first else x.shape[0]
    B = x.shape[0] if batch_first else x.shape[1]
    dtype = params.dtype
    y_ref, h_n_ref, grads_ref = _run("numpy", *problem)
    for backend in BACKENDS:
        y, h_n, grads = _run(backend, *problem)
        np.testing.assert_allclose(y, y_ref, **tolerance(dtype, "output"), err_msg=backend)
        np.testing.assert_allclose(h_n, h_n_ref, **tolerance(dtype, "output"), err_msg=backend)
        assert_grads_close(grads, grads_ref, dtype, T, B)
