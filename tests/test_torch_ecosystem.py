"""grukern.torch in torch's ecosystem: its operators under torch.library.opcheck, torch.compile
(fullgraph, in a fresh process), torch.export, ONNX export run by ONNX Runtime; and drop-in
parity with torch.nn.GRU: bias=False, the exception classes of bad calls, and torch's own
module_db samples for nn.GRU."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gt = pytest.importorskip("grukern.torch")

I, H = 3, 4


def _grads(module, x, hx, outputs):
    """Gradients of a fixed random loss of `outputs` with respect to x, hx and every parameter."""
    gen = torch.Generator().manual_seed(1)
    loss = sum(
        (out * torch.randn(out.shape, generator=gen, dtype=out.dtype)).sum() for out in outputs
    )
    inputs = [x] + ([hx] if hx is not None else []) + list(module.parameters())
    return torch.autograd.grad(loss, inputs)


def _assert_all_close(actual, expected, names):
    for a, e, name in zip(actual, expected, names, strict=True):
        torch.testing.assert_close(a, e, msg=lambda m, name=name: f"{name}: {m}")


# -- the operators -------------------------------------------------------------------------------


@pytest.mark.parametrize(("dropout", "with_h0"), [(0.0, True), (0.3, False)])
def test_operators_pass_opcheck(dropout, with_h0):
    """Schemas, fake kernels (shapes) and the autograd registration, as torch checks them."""
    module = gt.GRU(I, H, 2, bidirectional=True, batch_first=True, dtype=torch.float64)
    weights = [p.detach().clone().requires_grad_() for p in module.parameters()]
    x = torch.randn(2, 5, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, H, dtype=torch.float64, requires_grad=True) if with_h0 else None
    seed = torch.tensor(3) if dropout else None
    args = (x, h0, None, weights, True, True, True, dropout, seed, "numpy")
    torch.library.opcheck(torch.ops.grukern.gru_train.default, args)
    detached = [t.detach() for t in weights]
    inference_args = (x.detach(), None if h0 is None else h0.detach(), None, detached, *args[4:])
    torch.library.opcheck(torch.ops.grukern.gru.default, inference_args)
    y, h_n, saved = torch.ops.grukern.gru_train(*args)
    backward_args = (
        torch.randn_like(y), torch.randn_like(h_n), x.detach(), None, detached,
        [t.detach() for t in saved], True, True, True, "numpy",
    )  # fmt: skip
    torch.library.opcheck(torch.ops.grukern.gru_backward.default, backward_args)


def test_backward_takes_its_forwards_tape_or_rebuilds_it():
    """grukern::gru_backward reuses the forward's layer and tape only when handed the very
    tensors that forward took and saved; copies of them give the same gradients the slow way;
    the forward's entry goes with its saved tensors; a double backward is refused."""
    module = gt.GRU(I, H, 2, bidirectional=True, dtype=torch.float64)
    weights = [p.detach() for p in module.parameters()]
    x = torch.randn(5, 2, I, dtype=torch.float64)
    config = (True, True, False)  # bias, bidirectional, batch_first
    y, h_n, saved = torch.ops.grukern.gru_train(x, None, None, weights, *config, 0.0, None, "numba")
    assert gt._handed_off(x, None, weights, saved) is not None
    assert gt._handed_off(x.clone(), None, weights, saved) is None
    assert gt._handed_off(x, None, weights, [s.clone() for s in saved]) is None
    dy, dh_n = torch.randn_like(y), torch.randn_like(h_n)

    def backward(x, saved):
        args = (dy, dh_n, x, None, weights, saved, *config, "numba")
        dx, dh0, dweights = torch.ops.grukern.gru_backward(*args)
        return [dx, dh0, *dweights]

    names = ["dx", "dh0"] + [name for name, _ in module.named_parameters()]
    rebuilt = backward(x.clone(), [s.clone() for s in saved])
    _assert_all_close(backward(x, saved), rebuilt, names)
    entries = len(gt._handoffs)
    del y, h_n, saved
    assert len(gt._handoffs) == entries - 1

    params = [p.detach().requires_grad_() for p in module.parameters()]
    y, _, _ = torch.ops.grukern.gru_train(x, None, None, params, *config, 0.0, None, "numba")
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(y.sum(), params, create_graph=True)


# -- torch.compile -------------------------------------------------------------------------------

_COMPILE_SCRIPT = """
import torch
import grukern.torch as gt

class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = gt.GRU(3, 4, 2, bidirectional=True, batch_first=True, dtype=torch.float64)
        self.head = torch.nn.Linear(8, 2, dtype=torch.float64)

    def forward(self, x, h0):
        y, h_n = self.gru(x, h0)
        return self.head(y), h_n

def run(fn, model, x, h0):
    x, h0 = x.clone().requires_grad_(), h0.clone().requires_grad_()
    model.zero_grad(set_to_none=True)
    out, h_n = fn(x, h0)
    gen = torch.Generator().manual_seed(1)
    loss = (out * torch.randn(out.shape, generator=gen, dtype=out.dtype)).sum() + (
        h_n * torch.randn(h_n.shape, generator=gen, dtype=h_n.dtype)).sum()
    loss.backward()
    return [out.detach(), h_n.detach(), x.grad, h0.grad, *(p.grad for p in model.parameters())]

torch.manual_seed(0)
model = Model()
names = ["out", "h_n", "x", "h0", *(n for n, _ in model.named_parameters())]
compiled = torch.compile(model, fullgraph=True)
for call in range(2):  # the second call runs the compiled graph without compiling
    x, h0 = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(4, 2, 4, dtype=torch.float64)
    expected, actual = run(model, model, x, h0), run(compiled, model, x, h0)
    for name, a, e in zip(names, actual, expected, strict=True):
        torch.testing.assert_close(a, e, msg=lambda m: f"call {call}, {name}: {m}")
with torch.no_grad():  # the inference operator compiles too
    torch.testing.assert_close(compiled(x, h0)[0], model(x, h0)[0])
try:  # the argument checks are traced: fullgraph Dynamo reports grukern's error
    compiled(x, h0[:1])
except Exception as error:
    assert "hx must have shape (4, 2, 4)" in str(error), error
else:
    raise AssertionError("a bad hx passed")

dropping = gt.GRU(3, 4, 3, dropout=0.5, dtype=torch.float64)  # the seed is drawn in the graph
compiled = torch.compile(dropping, fullgraph=True)
runs = []
for seed in (0, 0, 1):
    torch.manual_seed(seed)
    runs.append(run(compiled, dropping, x.transpose(0, 1), h0[:3].contiguous()))
names = ["y", "h_n", "x", "h0", *(n for n, _ in dropping.named_parameters())]
for name, a, b in zip(names, runs[0], runs[1], strict=True):
    torch.testing.assert_close(a, b, rtol=0, atol=0, msg=lambda m: f"dropout, {name}: {m}")
assert not torch.equal(runs[0][0], runs[2][0]), "another seed, the same masks"
print("compiled matches eager")
"""


def test_compile_fullgraph_in_a_fresh_process_matches_eager():
    """Dynamo's state is per process: a fresh one compiles from scratch. Outputs and gradients
    (x, h0, every weight) of a stacked bidirectional batch-first GRU and a Linear; then a
    model with dropout, reproducible under torch.manual_seed."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_COMPILE_SCRIPT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    assert "compiled matches eager" in result.stdout


# -- torch.export --------------------------------------------------------------------------------


class _GRUAndLinear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = gt.GRU(I, H, 2, bidirectional=True, batch_first=True)
        self.head = torch.nn.Linear(2 * H, 2)

    def forward(self, x):
        y, h_n = self.gru(x)
        return self.head(y), h_n


@pytest.mark.parametrize("dynamic", [False, True])
def test_export_records_the_operator_and_runs_like_eager(dynamic):
    torch.manual_seed(0)
    model = _GRUAndLinear()
    x = torch.randn(2, 5, I)
    dims = ({0: torch.export.Dim("B"), 1: torch.export.Dim("T")},) if dynamic else None
    program = torch.export.export(model, (x,), dynamic_shapes=dims)
    targets = {node.target for node in program.graph.nodes}
    assert torch.ops.grukern.gru.default in targets
    other = torch.randn(3, 7, I) if dynamic else torch.randn(2, 5, I)  # not the example input
    for a, e in zip(program.module()(other), model(other), strict=True):
        torch.testing.assert_close(a, e)


# -- ONNX ----------------------------------------------------------------------------------------

ONNX_CASES = {  # name: (num_layers, bidirectional, batch_first, bias, with h0)
    "1 layer": (1, False, False, True, False),
    "2 layers bidirectional batch_first h0": (2, True, True, True, True),
    "2 layers no bias h0": (2, False, False, False, True),
}


@pytest.mark.parametrize("case", list(ONNX_CASES))
def test_onnx_export_writes_standard_gru_nodes_that_onnxruntime_runs(case, tmp_path):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    num_layers, bidirectional, batch_first, bias, with_h0 = ONNX_CASES[case]
    torch.manual_seed(0)
    module = gt.GRU(I, H, num_layers, bias=bias, batch_first=batch_first,
                    bidirectional=bidirectional).eval()  # fmt: skip
    x = torch.randn((2, 5, I) if batch_first else (5, 2, I))
    states = num_layers * (2 if bidirectional else 1)
    args = (x, torch.randn(states, 2, H)) if with_h0 else (x,)
    path = tmp_path / "gru.onnx"
    torch.onnx.export(
        module, args, path, dynamo=True, custom_translation_table=gt.onnx_translation_table()
    )
    nodes = onnx.load(path).graph.node
    assert sum(n.op_type == "GRU" for n in nodes) == num_layers
    assert {n.domain for n in nodes} <= {"", "ai.onnx"}  # standard operators only
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args, strict=True)}
    with torch.no_grad():
        expected = module(*args)
    for actual, e in zip(session.run(None, feeds), expected, strict=True):
        np.testing.assert_allclose(actual, e.numpy(), rtol=1e-5, atol=1e-5)


def test_onnx_export_with_dynamic_batch_and_length(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    module = gt.GRU(I, H, 2, batch_first=True, bidirectional=True).eval()
    dims = ({0: torch.export.Dim("B"), 1: torch.export.Dim("T")},)
    path = tmp_path / "gru.onnx"
    torch.onnx.export(
        module, (torch.randn(2, 5, I),), path, dynamo=True, dynamic_shapes=dims,
        custom_translation_table=gt.onnx_translation_table(),
    )  # fmt: skip
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = torch.randn(3, 7, I)  # another batch and length than the example
    with torch.no_grad():
        expected = module(x)
    actual = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a, e.numpy(), rtol=1e-5, atol=1e-5)


# -- bias=False ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("num_layers", "bidirectional"), [(1, False), (2, True)])
def test_bias_false_matches_torch(num_layers, bidirectional):
    kwargs = dict(bias=False, bidirectional=bidirectional, dtype=torch.float64)
    torch.manual_seed(0)
    ours = gt.GRU(I, H, num_layers, **kwargs)
    theirs = torch.nn.GRU(I, H, num_layers, **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(5, 2, I, dtype=torch.float64, requires_grad=True)
    hx = torch.randn(num_layers * (2 if bidirectional else 1), 2, H, dtype=torch.float64,
                     requires_grad=True)  # fmt: skip
    out, out_t = ours(x, hx), theirs(x, hx)
    _assert_all_close(out, out_t, ["y", "h_n"])
    names = ["x", "hx", *(n for n, _ in ours.named_parameters())]
    _assert_all_close(_grads(ours, x, hx, out), _grads(theirs, x, hx, out_t), names)
    other = torch.nn.GRU(I, H, num_layers, **kwargs)
    ours.load_state_dict(other.state_dict())  # and the other way
    for key, value in other.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


# -- exception classes -----------------------------------------------------------------------------

CONSTRUCTOR_ERRORS = {
    "float input_size": dict(input_size=4.0),
    "str input_size": dict(input_size="4"),
    "float hidden_size": dict(hidden_size=6.0),
    "zero input_size": dict(input_size=0),
    "negative hidden_size": dict(hidden_size=-2),
    "zero hidden_size": dict(hidden_size=0),
    "zero num_layers": dict(num_layers=0),
    "float num_layers": dict(num_layers=2.0),
    "dropout above 1": dict(dropout=1.5),
    "negative dropout": dict(dropout=-0.1),
    "str dropout": dict(dropout="0.1"),
    "bool dropout": dict(dropout=True),
    "int bias": dict(bias=1),
    "str bias": dict(bias="True"),
    "int batch_first": dict(batch_first=0),
    "integer dtype": dict(dtype=torch.int32),
    "proj_size": dict(proj_size=2),
}


def _exception(fn):
    try:
        fn()
    except Exception as error:  # any class torch raises is the expectation
        return error
    return None


@pytest.mark.parametrize("case", list(CONSTRUCTOR_ERRORS))
def test_bad_constructor_argument_raises_torchs_exception_class(case):
    kwargs = {"input_size": I, "hidden_size": H, "num_layers": 2, **CONSTRUCTOR_ERRORS[case]}
    torch_error = _exception(lambda: torch.nn.GRU(**kwargs))
    assert torch_error is not None, "torch accepts this: not a case for this test"
    with pytest.raises(type(torch_error)):
        gt.GRU(**kwargs)


CALL_ERRORS = {  # name: (input, hx) from a good time-major (x, hx) of a 2-layer module
    "1-d input": lambda x, hx: (x[0, 0], hx),
    "4-d input": lambda x, hx: (x[None], hx),
    "wrong input_size": lambda x, hx: (x[..., :2], hx),
    "no time steps": lambda x, hx: (x[:0], None),
    "hx batch": lambda x, hx: (x, hx[:, :2]),
    "hx layers": lambda x, hx: (x, hx[:1]),
    "hx hidden": lambda x, hx: (x, hx[..., :3]),
    "2-d hx, batched input": lambda x, hx: (x, hx[0]),
    "3-d hx, unbatched input": lambda x, hx: (x[:, 0], hx),
    "float64 input": lambda x, hx: (x.double(), None),
    "int input": lambda x, hx: (x.int(), None),
    "float64 hx": lambda x, hx: (x, hx.double()),
    "numpy input": lambda x, hx: (x.numpy(), None),
    "numpy hx": lambda x, hx: (x, hx.numpy()),
    "list hx": lambda x, hx: (x, [hx]),
}


@pytest.mark.parametrize("case", list(CALL_ERRORS))
def test_bad_call_raises_torchs_exception_class(case):
    torch.manual_seed(0)
    ours, theirs = gt.GRU(I, H, 2), torch.nn.GRU(I, H, 2)
    args = CALL_ERRORS[case](torch.randn(5, 3, I), torch.randn(2, 3, H))
    torch_error = _exception(lambda: theirs(*args))
    assert torch_error is not None, "torch accepts this: not a case for this test"
    with pytest.raises(type(torch_error)):
        ours(*args)


def test_dual_exception_classes_are_grukerns_and_torchs():
    assert issubclass(gt.GRUShapeError, ValueError) and issubclass(gt.GRUShapeError, RuntimeError)
    for cls in (TypeError, ValueError, RuntimeError, AttributeError):
        assert issubclass(gt.GRUTypeError, cls)


# -- torch's module_db samples for nn.GRU ----------------------------------------------------------


def _gru_module_info():
    pytest.importorskip("expecttest")  # torch.testing._internal imports it
    from torch.testing._internal.common_modules import module_db

    (info,) = [m for m in module_db if m.module_cls is torch.nn.GRU]
    return info


def _module_db_samples():
    info = _gru_module_info()
    samples = info.module_inputs_func(
        info, device="cpu", dtype=torch.float64, requires_grad=True, training=True
    )
    return [pytest.param(s, id=_sample_id(s)) for s in samples]


def _sample_id(sample) -> str:
    kwargs = sample.constructor_input.kwargs
    flags = [name for name in ("bias", "batch_first", "bidirectional") if kwargs[name]]
    hx = "hx" if len(sample.forward_input.args) > 1 else "no hx"
    return f"H={kwargs['hidden_size']} {' '.join(flags) or 'no bias'}, {hx}"


def _module_db_params():
    try:
        return _module_db_samples()
    except pytest.skip.Exception as skipped:
        return [pytest.param(None, marks=pytest.mark.skip(reason=str(skipped)))]


@pytest.mark.parametrize("sample", _module_db_params())
def test_module_db_sample_matches_torch(sample):
    """Every sample torch's own test suite feeds nn.GRU: outputs and every gradient. (None of
    them needs anything grukern does not support, so none is skipped.)"""
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    theirs = torch.nn.GRU(*args, **kwargs, dtype=torch.float64)
    ours = gt.GRU(*args, **kwargs, dtype=torch.float64)
    ours.load_state_dict(theirs.state_dict())
    forward = sample.forward_input
    x, hx = forward.args[0], forward.args[1] if len(forward.args) > 1 else None
    out, out_t = ours(*forward.args, **forward.kwargs), theirs(*forward.args, **forward.kwargs)
    _assert_all_close(out, out_t, ["y", "h_n"])
    names = ["x", *(["hx"] if hx is not None else []), *(n for n, _ in ours.named_parameters())]
    _assert_all_close(_grads(ours, x, hx, out), _grads(theirs, x, hx, out_t), names)


def _module_db_error_params():
    try:
        info = _gru_module_info()
    except pytest.skip.Exception as skipped:
        return [pytest.param(None, marks=pytest.mark.skip(reason=str(skipped)))]
    errors = info.module_error_inputs_func(
        info, device="cpu", dtype=torch.float64, requires_grad=True, training=True
    )
    return [pytest.param(e, id=e.error_regex[:40]) for e in errors]


@pytest.mark.parametrize("error", _module_db_error_params())
def test_module_db_error_input_raises_torchs_exception_class(error):
    from torch.testing._internal.common_modules import ModuleErrorEnum

    sample = error.module_error_input
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    if error.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
        with pytest.raises(error.error_type):
            gt.GRU(*args, **kwargs)
        return
    module = gt.GRU(*args, **kwargs)
    with pytest.raises(error.error_type):
        module(*sample.forward_input.args, **sample.forward_input.kwargs)
