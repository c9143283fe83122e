"""forward_train(..., segment=k): states-only tapes, gates recomputed k steps at a time."""

import tracemalloc

import numpy as np
import pytest

import grukern
from tests.helpers import assert_grads_close, make_problem, tolerance

BACKENDS = grukern.backends()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("segment", [1, 4, 23, 100])
def test_segmented_backward_matches_the_full_tape(rng, backend, reset_after, segment):
    p = make_problem(rng, 23, 3, 5, 7, reset_after=reset_after)
    y, h_n, tape = grukern.forward_train(p.x, p.params, p.h0, backend=backend)
    y_s, h_n_s, tape_s = grukern.forward_train(
        p.x, p.params, p.h0, backend=backend, segment=segment
    )
    np.testing.assert_array_equal(y_s, y)
    np.testing.assert_array_equal(h_n_s, h_n)
    assert tape_s.gates is None and tape_s.hn is None
    grads = grukern.backward(tape, dy=p.dy, dh_n=p.dh_n)
    grads_s = grukern.backward(tape_s, dy=p.dy, dh_n=p.dh_n)
    assert_grads_close(grads_s, grads, np.float64, 23, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_segments_keep_the_callers_layout_and_empty_sequences(rng, backend):
    p = make_problem(rng, 9, 2, 4, 5)
    to_bf = (1, 0, 2)
    _, _, tape = grukern.forward_train(
        p.x.transpose(to_bf), p.params, p.h0, backend=backend, batch_first=True, segment=4
    )
    grads = grukern.backward(tape, dy=p.dy.transpose(to_bf))
    reference = grukern.backward(
        grukern.forward_train(p.x, p.params, p.h0, backend="numpy")[2], dy=p.dy
    )
    np.testing.assert_allclose(
        grads.x, reference.x.transpose(to_bf), **tolerance(np.float64, "grad")
    )
    empty = make_problem(rng, 0, 2, 4, 5)
    y, _, tape = grukern.forward_train(empty.x, empty.params, empty.h0, backend=backend, segment=3)
    grads = grukern.backward(tape, dh_n=empty.dh_n)
    assert y.shape == (0, 2, 5) and grads.x.shape == (0, 2, 4)
    np.testing.assert_array_equal(grads.h0, empty.dh_n)


@pytest.mark.parametrize("reset_after", [True, False])
def test_a_states_only_tape_holds_t_plus_one_states(rng, reset_after):
    T, B, I, H = 60, 4, 6, 10
    p = make_problem(rng, T, B, I, H, dtype=np.float32, reset_after=reset_after)
    for segment in (None, 10):  # warm-up: compile or load the kernels outside the measurement
        grukern.forward_train(p.x, p.params, p.h0, segment=segment)
    held = {}
    for segment in (None, 10):
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        y, h_n, tape = grukern.forward_train(p.x, p.params, p.h0, segment=segment)
        held[segment] = tracemalloc.get_traced_memory()[0] - before - y.nbytes - h_n.nbytes
        tracemalloc.stop()
        del y, h_n, tape
    assert 4 * B * H * (T + 1) <= held[10] <= 4 * B * H * (T + 1) + 4096
    full = 4 * B * H * ((5 if reset_after else 4) * T + 1)
    assert full <= held[None] <= full + 4096


@pytest.mark.parametrize("segment", [0, -3, 2.5, True, "4"])
def test_segment_must_be_a_positive_integer(rng, segment):
    p = make_problem(rng, 3, 2, 4, 5)
    with pytest.raises(ValueError, match="segment must be None or a positive integer"):
        grukern.forward_train(p.x, p.params, p.h0, segment=segment)
