"""The reference BPTT against central finite differences in float64, for both variants."""

import numpy as np
import pytest

import grukern
from tests.helpers import make_problem, numerical_gradient

FD_TOL = {"rtol": 1e-6, "atol": 1e-8}


def _loss(problem, x=None, h0=None, params=None):
    """L = Σ dy ⊙ y + Σ dh_n ⊙ h_n, so dL/dy = dy and dL/dh_n = dh_n."""
    y, h_n = grukern.forward(
        problem.x if x is None else x,
        problem.params if params is None else params,
        problem.h0 if h0 is None else h0,
        backend="numpy",
    )
    return np.sum(problem.dy * y) + np.sum(problem.dh_n * h_n)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize(("T", "B", "I", "H"), [(4, 2, 3, 5), (1, 1, 1, 1), (3, 3, 6, 2)])
def test_every_gradient_matches_finite_differences(rng, reset_after, T, B, I, H):
    problem = make_problem(rng, T, B, I, H, reset_after=reset_after)
    _, _, tape = grukern.forward_train(problem.x, problem.params, problem.h0, backend="numpy")
    grads = grukern.backward(tape, dy=problem.dy, dh_n=problem.dh_n)

    x, h0, params = problem.x.copy(), problem.h0.copy(), problem.params.copy()
    expected = {
        "x": (grads.x, numerical_gradient(lambda: _loss(problem, x=x), x)),
        "h0": (grads.h0, numerical_gradient(lambda: _loss(problem, h0=h0), h0)),
    }
    for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
        expected[name] = (
            getattr(grads.params, name),
            numerical_gradient(lambda: _loss(problem, params=params), getattr(params, name)),
        )
    for name, (analytic, numeric) in expected.items():
        np.testing.assert_allclose(analytic, numeric, **FD_TOL, err_msg=f"d{name}")
        assert np.abs(numeric).max() > 1e-3, f"d{name} is too small for the test to mean much"


@pytest.mark.parametrize("reset_after", [True, False])
def test_gradient_layouts_follow_the_forward_layout(rng, reset_after):
    """batch_first and unbatched calls give the time-major gradients, laid out like x and h0."""
    T, B, I, H = 5, 3, 4, 6
    p = make_problem(rng, T, B, I, H, reset_after=reset_after)
    _, _, tape = grukern.forward_train(p.x, p.params, p.h0, backend="numpy")
    reference = grukern.backward(tape, dy=p.dy, dh_n=p.dh_n)

    _, _, tape_bf = grukern.forward_train(
        p.x.transpose(1, 0, 2), p.params, p.h0, backend="numpy", batch_first=True
    )
    batch_first = grukern.backward(tape_bf, dy=p.dy.transpose(1, 0, 2), dh_n=p.dh_n)
    np.testing.assert_array_equal(batch_first.x, reference.x.transpose(1, 0, 2))
    np.testing.assert_array_equal(batch_first.h0, reference.h0)
    np.testing.assert_array_equal(batch_first.params.w_hh, reference.params.w_hh)

    _, _, tape_1 = grukern.forward_train(p.x[:, 0], p.params, p.h0[0], backend="numpy")
    unbatched = grukern.backward(tape_1, dy=p.dy[:, 0], dh_n=p.dh_n[0])
    _, _, tape_b1 = grukern.forward_train(p.x[:, :1], p.params, p.h0[:1], backend="numpy")
    batch_of_one = grukern.backward(tape_b1, dy=p.dy[:, :1], dh_n=p.dh_n[:1])
    assert unbatched.x.shape == (T, I) and unbatched.h0.shape == (H,)
    np.testing.assert_array_equal(unbatched.x, batch_of_one.x[:, 0])
    np.testing.assert_array_equal(unbatched.h0, batch_of_one.h0[0])
    np.testing.assert_array_equal(unbatched.params.w_ih, batch_of_one.params.w_ih)


def test_dy_alone_and_dh_n_alone_add_up_to_both(rng):
    """Gradients are linear in (dy, dh_n): a missing one counts as zero."""
    p = make_problem(rng, 4, 2, 3, 5)
    _, _, tape = grukern.forward_train(p.x, p.params, p.h0, backend="numpy")
    both = grukern.backward(tape, dy=p.dy, dh_n=p.dh_n)
    only_dy = grukern.backward(tape, dy=p.dy)
    only_dh_n = grukern.backward(tape, dh_n=p.dh_n)
    np.testing.assert_allclose(only_dy.x + only_dh_n.x, both.x, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        only_dy.params.w_hh + only_dh_n.params.w_hh, both.params.w_hh, rtol=1e-12, atol=1e-14
    )
