"""The CUDA backend against the NumPy reference, at tiny sizes with tiny blocks.

Runs wherever backend "cuda" is available: on a GPU, or on any machine under numba's CUDA
simulator (CI: `NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/test_cuda_sim.py`), which costs
~70 µs per simulated thread, hence the tiny sizes. Block sizes are patched tiny so that even these
problems span several blocks, and every array the backend allocates for a kernel or product to
fill starts as NaN.
"""

import numpy as np
import pytest

import grukern
from tests.helpers import (
    PADDING_GARBAGE,
    assert_grads_close,
    assert_same_bits,
    assert_tapes_close,
    fill_padding,
    make_problem,
    tolerance,
)

pytestmark = pytest.mark.skipif(
    "cuda" not in grukern.backends(),
    reason="needs numba-cuda with a GPU, or the CUDA simulator (NUMBA_ENABLE_CUDASIM=1)",
)

ALGORITHMS = ["standard", "persistent"]

# (T, B, I, H, lengths): B=1, T=1, H=1, I≠H, H=33 (not a multiple of any block), and padded
# batches with a row of length 0 and a row of length T.
SIZES = [
    (1, 1, 1, 1, None),
    (3, 2, 3, 5, None),
    (4, 3, 2, 6, [4, 0, 2]),
    (2, 1, 4, 33, [1]),
]


@pytest.fixture(autouse=True)
def tiny_blocks_and_poisoned_outputs(monkeypatch):
    from grukern._backends import cuda as cuda_backend

    monkeypatch.setattr(cuda_backend, "POINTWISE_THREADS", 4)
    monkeypatch.setattr(cuda_backend, "PERSISTENT_THREADS", 8)
    xp = grukern._device.array_module()

    def nan_filled(shape, dtype):
        return xp.full(shape, np.nan, dtype=dtype)

    monkeypatch.setattr(cuda_backend, "_empty", nan_filled)
    return cuda_backend


def _host(a):
    return grukern._device.to_host(a)


def _run(backend, p, lengths=None):
    y, h_n, tape = grukern.forward_train(p.x, p.params, p.h0, backend=backend, lengths=lengths)
    return y, h_n, grukern.backward(tape, dy=p.dy, dh_n=p.dh_n)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("T", "B", "I", "H", "lengths"), SIZES)
def test_forward_and_gradients_match_the_reference(
    rng, algorithm, reset_after, dtype, T, B, I, H, lengths
):
    p = make_problem(rng, T, B, I, H, dtype=dtype, reset_after=reset_after)
    lengths = None if lengths is None else np.array(lengths)
    inputs = [a.copy() for a in (p.x, p.h0, p.dy, p.dh_n, *p.params.arrays())]
    with grukern.cuda_algorithm(algorithm):
        y, h_n, grads = _run("cuda", p, lengths)
        y_inference, h_n_inference = grukern.forward(
            p.x, p.params, p.h0, backend="cuda", lengths=lengths
        )
    y_ref, h_n_ref, grads_ref = _run("numpy", p, lengths)
    np.testing.assert_allclose(y, y_ref, **tolerance(dtype, "output"))
    np.testing.assert_allclose(h_n, h_n_ref, **tolerance(dtype, "output"))
    assert_grads_close(grads, grads_ref, dtype, T, B)
    np.testing.assert_array_equal(y_inference, y)
    np.testing.assert_array_equal(h_n_inference, h_n)
    if lengths is not None:  # exactly zero, as the reference
        padded = np.arange(T)[:, None] >= lengths[None, :]
        assert not y[padded].any() and not grads.x[padded].any()
    for before, after in zip(
        inputs, (p.x, p.h0, p.dy, p.dh_n, *p.params.arrays()), strict=True
    ):  # inputs are never modified
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("reset_after", [True, False])
def test_padding_is_never_read(rng, algorithm, reset_after):
    """NaN, ±inf or 1e30 in x and dy at padded steps give the bits of zero padding (on a GPU
    from device arrays, which the backend must not copy whole to mask)."""
    p = make_problem(rng, 3, 3, 2, 3, reset_after=reset_after)
    lengths = np.array([3, 0, 1])
    xp = grukern._device.array_module()

    def run(padding):
        x, dy = (xp.asarray(fill_padding(a, lengths, padding)) for a in (p.x, p.dy))
        with grukern.cuda_algorithm(algorithm):
            y, h_n, tape = grukern.forward_train(x, p.params, backend="cuda", lengths=lengths)
        grads = grukern.backward(tape, dy=dy)
        return [_host(a) for a in (y, h_n, grads.x, grads.h0, *grads.params.arrays())]

    clean = run(0.0)
    assert all(np.isfinite(a).all() for a in clean)
    for garbage in PADDING_GARBAGE:
        assert_same_bits(run(garbage), clean, f"padding {garbage}")


def test_tiny_blocks_make_several_blocks(tiny_blocks_and_poisoned_outputs):
    """The sizes above do span several blocks of the per-step kernels."""
    blocks, threads = tiny_blocks_and_poisoned_outputs._pointwise_launch(2 * 5)
    assert (blocks, threads) == (3, 4)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("reset_after", [True, False])
def test_tape_matches_the_reference_tape(rng, algorithm, reset_after):
    p = make_problem(rng, 3, 2, 4, 5, reset_after=reset_after)
    with grukern.cuda_algorithm(algorithm):
        tape = grukern.forward_train(p.x, p.params, p.h0, backend="cuda")[2]
    reference = grukern.forward_train(p.x, p.params, p.h0, backend="numpy")[2]
    assert_tapes_close(tape, reference)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_persistent_kernel_with_several_blocks(
    rng, monkeypatch, tiny_blocks_and_poisoned_outputs, dtype
):
    """Blocks of 2 units each, H=5: three blocks, the last one short.

    The simulator runs blocks one after another and its grid sync only synchronises a block, so
    a multi-block persistent launch is exact there only when no block reads another block's
    step-t output within the launch: one step (T=1) of reset_after=True. That is enough to
    check how the blocks split the units, their W_hh rows and the batch.
    """
    cuda_backend = tiny_blocks_and_poisoned_outputs
    monkeypatch.setattr(cuda_backend, "_persistent_units", lambda B, H, itemsize: 2)
    monkeypatch.setattr(cuda_backend, "_max_cooperative_blocks", lambda *args: 3)
    p = make_problem(rng, 1, 3, 4, 5, dtype=dtype)
    with grukern.cuda_algorithm("persistent"):
        y, _, tape = grukern.forward_train(p.x, p.params, p.h0, backend="cuda")
    y_ref, _, tape_ref = grukern.forward_train(p.x, p.params, p.h0, backend="numpy")
    np.testing.assert_allclose(y, y_ref, **tolerance(dtype, "output"))
    np.testing.assert_allclose(_host(tape.gates), tape_ref.gates, **tolerance(dtype, "output"))
    np.testing.assert_allclose(_host(tape.hn), tape_ref.hn, **tolerance(dtype, "output"))


def test_empty_sequence(rng):
    p = make_problem(rng, 0, 3, 4, 5)
    y, h_n, grads = _run("cuda", p)
    assert y.shape == (0, 3, 5) and grads.x.shape == (0, 3, 4)
    np.testing.assert_array_equal(h_n, p.h0)
    np.testing.assert_array_equal(grads.h0, p.dh_n)
    assert not any(_host(a).any() for a in grads.params.arrays())


def test_batch_first_unbatched_and_segments_go_through_the_api(rng):
    p = make_problem(rng, 4, 2, 3, 5)
    x_bf = np.ascontiguousarray(p.x.transpose(1, 0, 2))
    y, _ = grukern.forward(x_bf, p.params, p.h0, backend="cuda", batch_first=True)
    y_ref, _ = grukern.forward(x_bf, p.params, p.h0, backend="numpy", batch_first=True)
    np.testing.assert_allclose(y, y_ref, **tolerance(np.float64, "output"))
    y1, _ = grukern.forward(p.x[:, 0], p.params, p.h0[0], backend="cuda")
    np.testing.assert_allclose(y1, y_ref[0], **tolerance(np.float64, "output"))
    lengths = np.array([4, 2])
    tape = grukern.forward_train(p.x, p.params, backend="cuda", lengths=lengths, segment=3)[2]
    grads = grukern.backward(tape, dy=p.dy)
    tape_ref = grukern.forward_train(p.x, p.params, backend="numpy", lengths=lengths)[2]
    assert_grads_close(grads, grukern.backward(tape_ref, dy=p.dy), np.float64, 4, 2)


def test_algorithm_choice(tiny_blocks_and_poisoned_outputs, monkeypatch):
    cuda_backend = tiny_blocks_and_poisoned_outputs
    assert grukern._backends.cuda_algorithm_in_effect() == "auto"
    for kernel in ("persistent_forward", "persistent_backward"):  # as measured: standard always
        assert cuda_backend._choose_algorithm(1, 8, np.float32, kernel) == "standard"
    B = 4
    monkeypatch.setattr(cuda_backend, "PERSISTENT_MAX_BATCH", B)
    monkeypatch.setattr(cuda_backend, "PERSISTENT_BACKWARD_MAX_BATCH", 2 * B)
    assert cuda_backend._choose_algorithm(B, 8, np.float32) == "persistent"
    assert cuda_backend._choose_algorithm(B + 1, 8, np.float32) == "standard"
    assert cuda_backend._choose_algorithm(0, 8, np.float32) == "standard"
    assert cuda_backend._choose_algorithm(2 * B, 8, np.float32, "persistent_backward") == (
        "persistent"
    )
    assert cuda_backend._choose_algorithm(2 * B + 1, 8, np.float32, "persistent_backward") == (
        "standard"
    )
    with grukern.cuda_algorithm("standard"):
        assert cuda_backend._choose_algorithm(1, 8, np.float32) == "standard"
        with grukern.cuda_algorithm("persistent"):
            assert cuda_backend._choose_algorithm(B + 1, 8, np.float32) == "persistent"
        assert grukern._backends.cuda_algorithm_in_effect() == "standard"
    monkeypatch.setattr(cuda_backend, "PERSISTENT_SHARED_BYTES", 64)  # nothing fits
    assert cuda_backend._choose_algorithm(1, 8, np.float32) == "standard"
    with (
        grukern.cuda_algorithm("persistent"),
        pytest.raises(ValueError, match=r"persistent CUDA algorithm cannot run.*shared memory"),
    ):
        cuda_backend._choose_algorithm(1, 8, np.float32)
    with pytest.raises(ValueError, match=r"cuda_algorithm must be one of \['auto'"):
        grukern.cuda_algorithm("fast").__enter__()


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_layer_on_the_cuda_backend(rng, algorithm, batch_first):
    """grukern.GRU composed on the CUDA kernels: 2 bidirectional layers, padded lengths (NaN in
    the padding of x and dy) and dropout, forward and every gradient against the same layer on
    numpy, time-major and batch-first (whose host arrays reach the backend as views, which it
    copies). On a GPU the inputs are device arrays (the layer's own work between kernels stays
    on the device)."""
    gru = grukern.GRU(
        3, 4, 2, bidirectional=True, dropout=0.5, dtype=np.float64, seed=0, batch_first=batch_first
    )
    x, dy, dh_n = (rng.standard_normal(shape) for shape in [(5, 3, 3), (5, 3, 8), (4, 3, 4)])
    lengths = np.array([5, 0, 2])
    x, dy = fill_padding(x, lengths, np.nan), fill_padding(dy, lengths, np.nan)
    if batch_first:
        x, dy = (np.ascontiguousarray(a.transpose(1, 0, 2)) for a in (x, dy))
    xp = grukern._device.array_module()

    def run(backend, place):
        gru.backend = backend
        y, h_n, tape = gru.forward_train(place(x), lengths=lengths, rng=np.random.default_rng(1))
        grads = gru.backward(tape, dy=place(dy), dh_n=place(dh_n))
        weights = (a for p in grads.params for a in p.arrays())
        return [_host(a) for a in (y, h_n, grads.x, grads.h0, *weights)]

    expected = run("numpy", np.asarray)
    with grukern.cuda_algorithm(algorithm):
        actual = run("cuda", xp.asarray)
    for ours, theirs in zip(actual, expected, strict=True):
        np.testing.assert_allclose(ours, theirs, **tolerance(np.float64, "weight_grad", 15))


def test_small_grids_launch_without_numbas_occupancy_warning(tiny_blocks_and_poisoned_outputs):
    """numba warns when a grid has fewer than 128 blocks; grukern's small grids at small B·H
    are by design, so its launches keep that warning from users (seen on the H200)."""
    import warnings

    from numba.core.errors import NumbaPerformanceWarning

    cuda_backend = tiny_blocks_and_poisoned_outputs

    class Kernel:
        def __getitem__(self, configuration):
            warnings.warn("Grid size 1 will likely result in GPU under-utilization",
                          NumbaPerformanceWarning, stacklevel=2)  # fmt: skip
            return configuration

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cuda_backend._configured(Kernel(), 1, 32, 0) == (1, 32, 0, 0)


def test_the_persistent_kernels_refuse_an_empty_batch(tiny_blocks_and_poisoned_outputs):
    cuda_backend = tiny_blocks_and_poisoned_outputs
    for kernel in ("persistent_forward", "persistent_backward"):
        assert "empty (B=0)" in cuda_backend._persistent_obstacle(0, 8, 4, kernel)
    with (
        grukern.cuda_algorithm("persistent"),
        pytest.raises(ValueError, match=r"cannot run this problem: the batch is empty"),
    ):
        cuda_backend._choose_algorithm(0, 8, np.float32)
