"""grukern.torch: gradcheck of the operators, grukern.torch.GRU against torch.nn.GRU (outputs and
every gradient, in each input layout and with packed sequences), state dicts both ways, dropout,
zero-copy sharing, untouched inputs, and bad arguments."""

import numpy as np
import pytest

from tests.helpers import tolerance

torch = pytest.importorskip("torch")
gt = pytest.importorskip("grukern.torch")
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence  # noqa: E402

T, B, I, H = 5, 3, 4, 6
LENGTHS = [3, T, 1]  # unsorted, one full row
ARCHITECTURES = [(1, False), (2, True)]  # (num_layers, bidirectional)
LAYOUTS = ["time_major", "batch_first", "unbatched", "packed"]


def _pair(num_layers, bidirectional, dtype, batch_first=False, dropout=0.0):
    """grukern.torch.GRU and a torch.nn.GRU holding the same weights (loaded from ours)."""
    kwargs = dict(batch_first=batch_first, bidirectional=bidirectional, dtype=dtype)
    ours = gt.GRU(I, H, num_layers, dropout=dropout, **kwargs)
    theirs = torch.nn.GRU(I, H, num_layers, dropout=dropout, **kwargs)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _input(module, layout, steps=T, batch=B, lengths=LENGTHS, seed=0):
    """x for `module` in the layout (padded (T, B, I) for "packed"), hx, and lengths for
    "packed" (else None), in the module's dtype."""
    gen = torch.Generator().manual_seed(seed)
    dtype = module.weight_ih_l0.dtype
    rows = () if layout == "unbatched" else (batch,)
    x_shape = (batch, steps) if layout == "batch_first" else (steps, *rows)
    x = torch.randn((*x_shape, module.input_size), generator=gen, dtype=dtype)
    states = module.num_layers * (2 if module.bidirectional else 1)
    hx = torch.randn((states, *rows, module.hidden_size), generator=gen, dtype=dtype)
    return x, hx, torch.tensor(lengths) if layout == "packed" else None


def _run(module, x, hx, lengths, seed=1):
    """y (the packed data for packed input), h_n, and the gradients of a fixed random loss
    with respect to x, hx and every parameter, in named_parameters order."""
    x, hx = x.clone().requires_grad_(), hx.clone().requires_grad_()
    inp = x if lengths is None else pack_padded_sequence(x, lengths, enforce_sorted=False)
    y, h_n = module(inp, hx)
    if lengths is not None:
        assert isinstance(y, PackedSequence)
        y = y.data
    gen = torch.Generator().manual_seed(seed)
    dy = torch.randn(y.shape, generator=gen, dtype=y.dtype)
    dh_n = torch.randn(h_n.shape, generator=gen, dtype=y.dtype)
    grads = torch.autograd.grad((y * dy).sum() + (h_n * dh_n).sum(), [x, hx, *module.parameters()])
    return y.detach(), h_n.detach(), grads


def _assert_close(actual, expected, dtype, quantity, name):
    np.testing.assert_allclose(
        actual.numpy(), expected.numpy(), **tolerance(dtype, quantity, T * B), err_msg=name
    )


# -- torch.autograd.gradcheck in float64 ---------------------------------------------------------

# gradcheck runs the layer twice per input element: keep the sizes tiny.
GRADCHECK_SIZES = {"steps": 3, "batch": 2, "lengths": [1, 3]}
GI, GH = 2, 3


@pytest.fixture
def one_numba_thread():
    """Hundreds of tiny calls: serial kernels take ~0.5 ms each, while a parallel region on a
    busy 2-core machine took ~50 ms. The parallel kernels are compared with torch below."""
    import grukern

    threads = grukern.get_num_threads()
    grukern.set_num_threads(1)
    yield
    grukern.set_num_threads(threads)


def _gradcheck(fn, *inputs):
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.usefixtures("one_numba_thread")
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("num_layers", "bidirectional"), [(1, False), (2, False), (1, True)])
def test_module_passes_gradcheck(layout, num_layers, bidirectional):
    """Through the module (so packing and layouts are checked too), on x, hx and every weight."""
    module = gt.GRU(
        GI, GH, num_layers, bidirectional=bidirectional, batch_first=layout == "batch_first",
        dtype=torch.float64,
    )  # fmt: skip
    names = [name for name, _ in module.named_parameters()]
    x, hx, lengths = _input(module, layout, **GRADCHECK_SIZES)

    def fn(x, hx, *weights):
        inp = x if lengths is None else pack_padded_sequence(x, lengths, enforce_sorted=False)
        y, h_n = torch.func.functional_call(
            module, dict(zip(names, weights, strict=True)), (inp, hx)
        )
        return (y.data if lengths is not None else y), h_n

    _gradcheck(fn, x, hx, *module.parameters())


@pytest.mark.usefixtures("one_numba_thread")
def test_function_passes_gradcheck_with_lengths_and_dropout():
    """gru() itself: two bidirectional layers, padded lengths, and fixed dropout masks."""
    module = gt.GRU(GI, GH, 2, bidirectional=True, dtype=torch.float64)
    x, hx, lengths = _input(module, "packed", **GRADCHECK_SIZES)
    config = gt.GRUConfig(bidirectional=True, dropout=0.4, seed=7)
    _gradcheck(
        lambda *args: gt.gru(args[0], args[1], lengths, config, args[2:]),
        x, hx, *module.parameters(),
    )  # fmt: skip


# -- against torch.nn.GRU ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("num_layers", "bidirectional"), ARCHITECTURES)
def test_matches_torch_outputs_and_gradients(dtype, layout, num_layers, bidirectional):
    ours, theirs = _pair(num_layers, bidirectional, dtype, batch_first=layout == "batch_first")
    x, hx, lengths = _input(ours, layout)
    y, h_n, grads = _run(ours, x, hx, lengths)
    y_t, h_n_t, grads_t = _run(theirs, x, hx, lengths)
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    _assert_close(y, y_t, np_dtype, "output", "y")
    _assert_close(h_n, h_n_t, np_dtype, "output", "h_n")
    names = ["x", "hx", *(name for name, _ in ours.named_parameters())]
    for name, g, g_t in zip(names, grads, grads_t, strict=True):
        quantity = "grad" if name in ("x", "hx") else "weight_grad"
        _assert_close(g, g_t, np_dtype, quantity, f"grad {name}")
    with torch.no_grad():  # inference keeps no tape and computes the same thing
        inp = x if lengths is None else pack_padded_sequence(x, lengths, enforce_sorted=False)
        y_inf, h_n_inf = ours(inp, hx)
    torch.testing.assert_close(y_inf.data if lengths is not None else y_inf, y, rtol=0, atol=0)
    torch.testing.assert_close(h_n_inf, h_n, rtol=0, atol=0)


def test_packed_output_is_packed_like_torch():
    ours, theirs = _pair(2, True, torch.float64)
    x, hx, lengths = _input(ours, "packed")
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    y, _ = ours(packed, hx)
    y_t, _ = theirs(packed, hx)
    for field in ("batch_sizes", "sorted_indices", "unsorted_indices"):
        assert torch.equal(getattr(y, field), getattr(y_t, field)), field


@pytest.mark.parametrize("garbage", [float("nan"), float("inf"), 1e30])
def test_padding_of_a_packed_batch_is_never_read(garbage):
    """A padded batch whose padding holds garbage, packed with its lengths: the same bits as
    zero padding for y, h_n and every gradient, and a zero gradient at the padded steps."""
    ours = gt.GRU(I, H, 2, bidirectional=True, dtype=torch.float64)
    x, hx, lengths = _input(ours, "packed")
    padded = torch.arange(T)[:, None] >= lengths[None, :]  # (T, B)
    clean, dirty = x.clone(), x.clone()
    clean[padded], dirty[padded] = 0.0, garbage
    y, h_n, grads = _run(ours, dirty, hx, lengths)
    y_clean, h_n_clean, grads_clean = _run(ours, clean, hx, lengths)
    for a, b in zip((y, h_n, *grads), (y_clean, h_n_clean, *grads_clean), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=False)
    assert (grads[0][padded] == 0).all()  # grads[0] is dL/dx


def test_default_hx_is_zeros_and_output_shapes_match_torch():
    ours, theirs = _pair(2, True, torch.float32, batch_first=True)
    x, _, _ = _input(ours, "batch_first")
    (y, h_n), (y_t, h_n_t) = ours(x), theirs(x)
    assert y.shape == y_t.shape == (B, T, 2 * H) and h_n.shape == h_n_t.shape == (4, B, H)
    torch.testing.assert_close(y, y_t)
    torch.testing.assert_close(h_n, h_n_t)


# -- parameters and state dicts ------------------------------------------------------------------


@pytest.mark.parametrize(("num_layers", "bidirectional"), ARCHITECTURES)
def test_parameters_are_torchs_names_shapes_and_initialisation(num_layers, bidirectional):
    torch.manual_seed(3)
    ours = gt.GRU(I, H, num_layers, bidirectional=bidirectional)
    torch.manual_seed(3)
    theirs = torch.nn.GRU(I, H, num_layers, bidirectional=bidirectional)
    state, state_t = ours.state_dict(), theirs.state_dict()
    assert list(state) == list(state_t)
    for key in state:
        assert torch.equal(state[key], state_t[key]), key


def test_state_dict_loads_both_ways():
    ours, theirs = _pair(2, True, torch.float64)  # torch.nn.GRU.load_state_dict(ours.state_dict())
    other = torch.nn.GRU(I, H, 2, bidirectional=True, dtype=torch.float64)
    ours.load_state_dict(other.state_dict())
    for key, value in other.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
        assert not torch.equal(theirs.state_dict()[key], value), key  # the load changed ours


def test_weights_and_time_major_input_reach_the_kernels_without_copies(monkeypatch):
    """...and backward reads the forward's tape instead of running the forward again."""
    import grukern

    tapes = []  # one entry per forward pass: its LayerTape, or None for an inference pass
    forward_train, call = grukern.GRU.forward_train, grukern.GRU.__call__

    def spy_train(layer, *args, **kwargs):
        y, h_n, tape = forward_train(layer, *args, **kwargs)
        tapes.append(tape)
        return y, h_n, tape

    def spy_call(layer, *args, **kwargs):
        tapes.append(None)
        return call(layer, *args, **kwargs)

    monkeypatch.setattr(grukern.GRU, "forward_train", spy_train)
    monkeypatch.setattr(grukern.GRU, "__call__", spy_call)
    module = gt.GRU(I, H, 2, bidirectional=True)
    x, hx, _ = _input(module, "time_major")
    y, _ = module(x.requires_grad_(), hx)
    (tape,) = tapes
    names = iter(module._weight_names)
    for layer_tape in tape.tapes:  # one per (layer, direction)
        for array in layer_tape.params.arrays():
            name = next(names)
            assert np.shares_memory(array, getattr(module, name).detach().numpy()), name
    assert np.shares_memory(tape.tapes[0].x, x.detach().numpy())
    y.sum().backward()
    assert len(tapes) == 1  # no forward ran during backward
    assert module.weight_hh_l1_reverse.grad is not None


def test_calls_with_the_same_weights_share_a_layer_that_keeps_no_weights_alive():
    """The layer built for a module's weights serves its later calls: it views their memory, so
    it follows in-place changes (an optimizer's); weights in new memory get a new layer; the
    layer's arrays own no memory (replaced weights are freed) and its entries go with the
    module."""
    import gc
    import weakref

    ours, theirs = _pair(2, True, torch.float64)
    x, hx, _ = _input(ours, "time_major")

    def layer_of(module):
        weights = [getattr(module, name) for name in module._weight_names]
        return gt._layer(weights, True, True, False, 0.0, x.device, "numba")

    first = layer_of(ours)
    assert layer_of(ours) is first
    arrays = [a for params in first.params for a in params.arrays()]
    assert not any(isinstance(a.base, torch.Tensor) for a in arrays)  # views owning nothing
    with torch.no_grad():
        for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
            p.mul_(0.5), q.mul_(0.5)
        assert layer_of(ours) is first
        torch.testing.assert_close(ours(x, hx), theirs(x, hx))
        for module in (ours, theirs):
            module.weight_hh_l1.data = 2 * module.weight_hh_l1.detach()  # new memory
        assert layer_of(ours) is not first
        torch.testing.assert_close(ours(x, hx), theirs(x, hx))
    mine = [key for key, (ref, _) in gt._layers.items() if ref() is ours.weight_ih_l0]
    assert len(mine) == 2
    weights = [weakref.ref(p) for p in ours.parameters()]
    del ours, first, p
    gc.collect()
    assert all(ref() is None for ref in weights)
    assert not any(key in gt._layers for key in mine)


def test_a_weight_given_new_memory_before_backward_keeps_its_forwards_gradients():
    """The layer's views own no memory: the forward's weights stay alive for its backward even
    when a parameter gets new memory in between (its old memory is not reused under it)."""
    import gc

    module = gt.GRU(I, H, dtype=torch.float64)
    x, hx, _ = _input(module, "time_major")
    first, second = x.clone().requires_grad_(), x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(module(first, hx)[0].sum(), first)
    y, _ = module(second, hx)
    old = module.weight_hh_l0.data
    module.weight_hh_l0.data = torch.zeros_like(old)
    del old
    gc.collect()
    filler = [torch.full_like(module.weight_hh_l0, float("nan")) for _ in range(50)]
    (gradient,) = torch.autograd.grad(y.sum(), second)
    torch.testing.assert_close(gradient, expected)
    assert len(filler) == 50


# -- dropout ---------------------------------------------------------------------------------------


def test_dropout_is_reproducible_under_manual_seed_and_absent_in_eval():
    ours, theirs = _pair(3, True, torch.float64, dropout=0.5)
    x, hx, _ = _input(ours, "time_major")

    def train_run(seed):
        torch.manual_seed(seed)
        return _run(ours, x, hx, None)

    (y1, h1, g1), (y2, h2, g2), (y3, _, _) = train_run(0), train_run(0), train_run(1)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    torch.testing.assert_close(h1, h2, rtol=0, atol=0)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(y1, y3)  # another seed, other masks
    ours.eval()
    theirs.eval()
    y_eval, _, _ = _run(ours, x, hx, None)
    assert not torch.equal(y1, y_eval)  # dropout did act in training mode
    _assert_close(y_eval, _run(theirs, x, hx, None)[0], np.float64, "output", "y in eval()")


# -- inputs are left alone -------------------------------------------------------------------------


def test_inputs_and_weights_are_not_modified():
    module = gt.GRU(I, H, 2, bidirectional=True, batch_first=True)
    x, hx, _ = _input(module, "batch_first")
    before = [t.clone() for t in (x, hx, *module.parameters())]
    _run(module, x, hx, None)
    x.requires_grad_()
    y, h_n = module(x, hx)
    (y.sum() + h_n.sum()).backward()
    for a, b in zip(before, (x, hx, *module.parameters()), strict=True):
        assert torch.equal(a, b.detach())


def test_modifying_a_weight_before_backward_raises():
    module = gt.GRU(I, H)
    x, hx, _ = _input(module, "time_major")
    y, _ = module(x, hx)
    with torch.no_grad():
        module.weight_hh_l0.mul_(2)  # e.g. an optimizer step between forward and backward
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


# -- bad arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"bias": "yes"}, TypeError, "bias must be a bool"),
        ({"dtype": torch.float16}, TypeError, "dtype must be torch.float32 or torch.float64"),
        ({"dropout": 1.5}, ValueError, r"dropout must lie in \[0, 1\]"),
        ({"dropout": "0.1"}, TypeError, "dropout must be a float"),
        ({"backend": "tpu"}, ValueError, "backend must be one of"),
        ({"num_layers": 0}, ValueError, "num_layers must be a positive integer"),
        ({"bidirectional": 1}, TypeError, "bidirectional must be a bool"),
        ({"batch_first": "yes"}, TypeError, "batch_first must be a bool"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        gt.GRU(I, H, **{"num_layers": 2, **kwargs})


def test_dropout_one_drops_every_output_between_layers_as_torch_does(rng):
    """p = 1 is deterministic: in training, layer 2 sees zeros, in torch.nn.GRU as here."""
    torch.manual_seed(0)
    reference = torch.nn.GRU(I, H, 2, dropout=1.0)
    module = gt.GRU(I, H, 2, dropout=1.0, backend="numpy")
    module.load_state_dict(reference.state_dict())
    x = torch.from_numpy(rng.standard_normal((T, B, I)))
    reference, module = reference.double().train(), module.double().train()
    y, h_n = module(x)
    y_ref, h_ref = reference(x)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(h_n, h_ref)
    y.sum().backward()
    y_ref.sum().backward()
    torch.testing.assert_close(module.weight_ih_l1.grad, reference.weight_ih_l1.grad)
    assert not module.weight_ih_l1.grad.any()  # layer 2's input was all zeros


@pytest.mark.parametrize("proj_size", [0, 3])
def test_proj_size_is_refused_as_torch_refuses_it(proj_size):
    """torch.nn.GRU refuses proj_size (an LSTM argument) with this ValueError, even 0."""
    message = "proj_size argument is only supported for LSTM, not RNN or GRU"
    with pytest.raises(ValueError, match=message):
        torch.nn.GRU(I, H, proj_size=proj_size)
    with pytest.raises(ValueError, match=message):
        gt.GRU(I, H, proj_size=proj_size)


@pytest.mark.parametrize(
    ("make_call", "error", "match"),
    [
        (lambda x, hx: (x.numpy(), hx), TypeError, "input must be a Tensor"),
        (lambda x, hx: (x[0, 0], hx), ValueError, "input must have 3 dimensions"),
        (lambda x, hx: (x[..., :2], hx), ValueError, "input has 2 features"),
        (lambda x, hx: (x[:0], hx), ValueError, "at least one time step"),
        (lambda x, hx: (x.double(), hx), TypeError, "input has dtype torch.float64"),
        (lambda x, hx: (x, hx[:, :2]), ValueError, r"hx must have shape \(2, 3, 6\)"),
        (lambda x, hx: (x, hx.double()), TypeError, "hx has dtype torch.float64"),
        (lambda x, hx: (x, hx.numpy()), TypeError, "hx must be a Tensor or None"),
    ],
)
def test_bad_call_arguments(make_call, error, match):
    module = gt.GRU(I, H, 2)
    x, hx, _ = _input(module, "time_major")
    with pytest.raises(error, match=match):
        module(*make_call(x, hx))


def test_half_precision_module_is_refused():
    module = gt.GRU(I, H).half()
    with pytest.raises(TypeError, match=r"parameters have dtype torch\.float16"):
        module(torch.zeros(T, B, I, dtype=torch.float16))


def test_backend_cuda_on_cpu_tensors_is_refused():
    module = gt.GRU(I, H, backend="cuda")
    with pytest.raises(ValueError, match="backend 'cuda' needs CUDA tensors"):
        module(torch.zeros(T, B, I))


def test_cuda_tensors_go_to_the_cuda_backend():
    """A CPU-only torch cannot make CUDA tensors: the device mapping is checked directly."""
    from grukern import _tensors

    assert _tensors.backend_for(torch.device("cuda", 0), "auto") == "cuda"
    assert _tensors.backend_for(torch.device("cuda", 0), "cuda") == "cuda"
    _tensors.check_device(torch.device("cuda", 0), "auto", "grukern.torch")
    with pytest.raises(ValueError, match=r"backend 'numba' runs CPU tensors; the tensors are on"):
        _tensors.check_device(torch.device("cuda", 0), "numba", "grukern.torch")


def test_tensors_on_other_devices_are_refused():
    module = gt.GRU(I, H, device="meta")
    with pytest.raises(NotImplementedError, match="runs CPU and CUDA tensors, got tensors on meta"):
        module(torch.zeros(T, B, I, device="meta"))
    with pytest.raises(ValueError, match="must be on one device"):
        module(torch.zeros(T, B, I))


def test_dropout_on_one_layer_warns_like_torch():
    with pytest.warns(UserWarning, match="does nothing with num_layers=1"):
        gt.GRU(I, H, dropout=0.5)


def test_importing_grukern_does_not_import_grukern_torch():
    import subprocess
    import sys

    code = "import sys, grukern; assert not {'torch', 'grukern.torch'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
