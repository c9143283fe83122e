"""GRU parameters, their initialisation, and converters to and from PyTorch, Keras and ONNX.

grukern's layout is PyTorch's: gate rows stacked as [r; z; n] (reset, update, candidate).

    w_ih (3H, I)   input weights       [W_ir; W_iz; W_in]
    w_hh (3H, H)   recurrent weights   [W_hr; W_hz; W_hn]
    b_ih (3H,)     input bias          [b_ir; b_iz; b_in]
    b_hh (3H,)     recurrent bias      [b_hr; b_hz; b_hn]

Keras and ONNX stack the gates as [z; r; n]; Keras also stores the kernels transposed. Every
layout conversion in grukern lives in this module.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import numpy as np

from grukern._device import array_module, is_device_array, module_of, to_host

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_FIELDS = ("w_ih", "w_hh", "b_ih", "b_hh")


def check_float_dtype(name: str, dtype) -> np.dtype:
    """Return `dtype` as a NumPy dtype if grukern computes in it, else raise TypeError."""
    dtype = np.dtype(dtype)
    if dtype not in SUPPORTED_DTYPES:
        if name == "dtype":  # the argument is itself a dtype
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        raise TypeError(f"{name} has dtype {dtype}; expected float32 or float64")
    return dtype


@dataclasses.dataclass(eq=False, repr=False)
class GRUParams:
    """The weights of one GRU layer in one direction (gate rows [r; z; n], PyTorch's layout).

    reset_after selects the variant (docs/math.md): True applies the reset gate after the
    recurrent product, r ⊙ (W_hn h + b_hn), as PyTorch, cuDNN and Keras do by default; False
    applies it before, W_hn (r ⊙ h) + b_hn, as in Cho et al. (2014).

    The arrays are used as given (no copies, no casts); all four must share one float dtype and
    one place: NumPy arrays on the host, or CuPy arrays on a GPU for the CUDA backend
    (`to_device()` moves them once, so a training loop never uploads the weights again).
    """

    w_ih: np.ndarray  # (3H, I)
    w_hh: np.ndarray  # (3H, H)
    b_ih: np.ndarray  # (3H,)
    b_hh: np.ndarray  # (3H,)
    reset_after: bool = True

    def __post_init__(self):
        self.validate()

    def __repr__(self) -> str:
        where = "on the GPU" if self.on_device else "on the host"
        return (
            f"GRUParams(input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"dtype={self.dtype}, reset_after={self.reset_after}, {where})"
        )

    def validate(self) -> None:
        """Raise TypeError or ValueError unless the four arrays form one consistent GRU."""
        if self._is_consistent():  # the common case, checked in one expression
            return
        arrays = self.arrays()
        for name, value in zip(_FIELDS, arrays, strict=True):
            if not isinstance(value, np.ndarray) and not is_device_array(value):
                raise TypeError(
                    f"GRUParams.{name} must be a numpy.ndarray, got {type(value).__name__} "
                    "(or a CuPy array on the GPU: see GRUParams.to_device)"
                )
            if value.dtype not in SUPPORTED_DTYPES:
                check_float_dtype(f"GRUParams.{name}", value.dtype)  # raises, naming the field
        if self.w_hh.ndim != 2 or self.w_hh.shape[0] != 3 * self.w_hh.shape[1]:
            raise ValueError(
                "GRUParams.w_hh must have shape (3*hidden_size, hidden_size), "
                f"got {self.w_hh.shape}"
            )
        hidden = self.w_hh.shape[1]
        if self.w_ih.ndim != 2 or self.w_ih.shape[0] != 3 * hidden:
            raise ValueError(
                f"GRUParams.w_ih must have shape (3*hidden_size, input_size) = ({3 * hidden}, I) "
                f"to match w_hh {self.w_hh.shape}, got {self.w_ih.shape}"
            )
        for name in ("b_ih", "b_hh"):
            shape = getattr(self, name).shape
            if shape != (3 * hidden,):
                raise ValueError(f"GRUParams.{name} must have shape ({3 * hidden},), got {shape}")
        if len({type(a) for a in arrays}) != 1:
            listed = ", ".join(
                f"{name}={type(a).__name__}" for name, a in zip(_FIELDS, arrays, strict=True)
            )
            raise TypeError(
                f"GRUParams arrays must all live on the host or all on the device, got {listed}"
            )
        if not all(a.dtype == self.w_hh.dtype for a in arrays):
            listed = ", ".join(f"{name}={a.dtype}" for name, a in zip(_FIELDS, arrays, strict=True))
            raise TypeError(f"GRUParams arrays must share one dtype, got {listed}")
        if not isinstance(self.reset_after, (bool, np.bool_)):
            raise TypeError(
                f"GRUParams.reset_after must be a bool, got {type(self.reset_after).__name__}"
            )

    def _is_consistent(self) -> bool:
        w_ih, w_hh, b_ih, b_hh = self.arrays()
        return (
            type(w_ih) is type(w_hh) is type(b_ih) is type(b_hh)
            and (type(w_hh) is np.ndarray or is_device_array(w_hh))
            and w_hh.dtype in SUPPORTED_DTYPES
            and w_ih.dtype == w_hh.dtype == b_ih.dtype == b_hh.dtype
            and w_ih.ndim == w_hh.ndim == 2
            and w_ih.shape[0] == w_hh.shape[0] == 3 * w_hh.shape[1]
            and b_ih.shape == b_hh.shape == (w_hh.shape[0],)
            and isinstance(self.reset_after, (bool, np.bool_))
        )

    @property
    def input_size(self) -> int:
        return self.w_ih.shape[1]

    @property
    def hidden_size(self) -> int:
        return self.w_hh.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return self.w_hh.dtype

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(w_ih, w_hh, b_ih, b_hh)."""
        return self.w_ih, self.w_hh, self.b_ih, self.b_hh

    def astype(self, dtype) -> GRUParams:
        """A new GRUParams with every array converted to `dtype` (float32 or float64)."""
        dtype = check_float_dtype("dtype", dtype)
        return self._map(lambda a: a.astype(dtype))

    def copy(self) -> GRUParams:
        """A deep copy: new arrays, same values, in the same place (host or device)."""
        return self._map(lambda a: a.copy())

    @property
    def on_device(self) -> bool:
        """Whether the arrays are CuPy arrays on a GPU."""
        return is_device_array(self.w_hh)

    def to_device(self) -> GRUParams:
        """These params on the GPU, for backend="cuda": copied once, or self if already there.

        Needs CuPy (grukern[cuda12] or grukern[cuda13]). Under numba's CUDA simulator there is no
        device memory and the arrays stay NumPy arrays.
        """
        xp = array_module()
        if self.on_device or xp is np:
            return self
        return self._map(xp.asarray)

    def to_host(self) -> GRUParams:
        """These params as NumPy arrays: copied from the GPU, or self if already on the host."""
        return self._map(to_host) if self.on_device else self

    def _map(self, fn) -> GRUParams:
        return GRUParams(*(fn(a) for a in self.arrays()), reset_after=bool(self.reset_after))

    # -- PyTorch: nn.GRU state dict keys weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0 ----

    @classmethod
    def from_torch(cls, module_or_state_dict) -> GRUParams:
        """Copy the weights of a one-layer, one-direction torch.nn.GRU (module or state dict).

        torch's GRU is the reset_after=True variant. A GRU built with bias=False gets zero biases.
        """
        state = module_or_state_dict
        if not isinstance(state, Mapping):
            state = module_or_state_dict.state_dict()
        extra = sorted(k for k in state if not k.endswith("_l0"))
        if extra:
            raise ValueError(
                "from_torch takes a single-layer, unidirectional nn.GRU; the state dict also "
                f"holds {extra}"
            )
        w_ih = _torch_to_numpy(state["weight_ih_l0"])
        w_hh = _torch_to_numpy(state["weight_hh_l0"])
        zeros = np.zeros(w_hh.shape[0], dtype=w_hh.dtype)
        b_ih = _torch_to_numpy(state["bias_ih_l0"]) if "bias_ih_l0" in state else zeros
        b_hh = _torch_to_numpy(state["bias_hh_l0"]) if "bias_hh_l0" in state else zeros.copy()
        return cls(w_ih, w_hh, b_ih, b_hh, reset_after=True)

    def to_torch_state_dict(self) -> dict:
        """A state dict for torch.nn.GRU(input_size, hidden_size) (torch tensors, copied)."""
        if not self.reset_after:
            raise ValueError(
                "torch.nn.GRU implements only the reset_after=True variant; these params have "
                "reset_after=False"
            )
        import torch

        return {
            f"{torch_name}_l0": torch.from_numpy(np.array(array, copy=True))
            for torch_name, array in zip(
                ("weight_ih", "weight_hh", "bias_ih", "bias_hh"), self.arrays(), strict=True
            )
        }

    # -- Keras: kernel (I, 3H), recurrent_kernel (H, 3H), gates [z, r, n] ----------------------

    @classmethod
    def from_keras(cls, layer_or_weights) -> GRUParams:
        """Copy the weights of a keras GRU layer, or of its get_weights() list. (Keras 3 runs
        here on its torch backend: set KERAS_BACKEND=torch before importing keras.)

        The variant follows the bias shape: (2, 3H) is reset_after=True (row 0 input bias, row 1
        recurrent bias); (3H,) is reset_after=False, whose single bias becomes b_ih (b_hh = 0:
        with the reset applied before the product every bias enters the pre-activation
        additively). A layer built with use_bias=False gets zero biases and the layer's variant.
        """
        if hasattr(layer_or_weights, "get_weights"):
            weights = [np.asarray(w) for w in layer_or_weights.get_weights()]
            reset_after = bool(layer_or_weights.reset_after)
        else:
            weights = [np.asarray(w) for w in layer_or_weights]
            reset_after = len(weights) == 3 and weights[2].ndim == 2
        if len(weights) not in (2, 3):
            raise ValueError(
                "from_keras expects [kernel, recurrent_kernel] or [kernel, recurrent_kernel, "
                f"bias], got {len(weights)} arrays"
            )
        kernel, recurrent_kernel = weights[:2]
        w_ih = swap_rz(kernel.T)
        w_hh = swap_rz(recurrent_kernel.T)
        zeros = np.zeros(w_hh.shape[0], dtype=w_hh.dtype)
        if len(weights) == 2:
            b_ih, b_hh = zeros, zeros.copy()
        elif weights[2].ndim == 2:
            b_ih, b_hh = swap_rz(weights[2][0]), swap_rz(weights[2][1])
        else:
            b_ih, b_hh = swap_rz(weights[2]), zeros
        return cls(w_ih, w_hh, b_ih, b_hh, reset_after=reset_after)

    def to_keras_weights(self) -> list[np.ndarray]:
        """[kernel (I, 3H), recurrent_kernel (H, 3H), bias] for keras GRU.set_weights.

        bias is (2, 3H) for reset_after=True and (3H,) = b_ih + b_hh for reset_after=False.
        """
        kernel, recurrent_kernel = keras_columns(self.w_ih), keras_columns(self.w_hh)
        if self.reset_after:
            bias = np.stack([swap_rz(self.b_ih), swap_rz(self.b_hh)])
        else:
            bias = swap_rz(self.b_ih + self.b_hh)
        return [kernel, recurrent_kernel, bias]

    # -- ONNX GRU operator: W (1, 3H, I), R (1, 3H, H), B (1, 6H), gates [z, r, h] -------------

    @classmethod
    def from_onnx(cls, W, R, B=None, *, linear_before_reset: int = 1) -> GRUParams:
        """Build params from the inputs of a forward ONNX GRU node (num_directions = 1)."""
        w_ih = swap_rz(np.asarray(W)[0])
        w_hh = swap_rz(np.asarray(R)[0])
        hidden3 = w_hh.shape[0]
        bias = np.zeros(2 * hidden3, dtype=w_hh.dtype) if B is None else np.asarray(B)[0]
        b_ih, b_hh = swap_rz(bias[:hidden3]), swap_rz(bias[hidden3:])
        return cls(w_ih, w_hh, b_ih, b_hh, reset_after=bool(linear_before_reset))

    def to_onnx(self) -> dict:
        """Inputs and attribute of an ONNX GRU node: W, R, B and linear_before_reset."""
        return {
            "W": swap_rz(self.w_ih)[None],
            "R": swap_rz(self.w_hh)[None],
            "B": np.concatenate([swap_rz(self.b_ih), swap_rz(self.b_hh)])[None],
            "linear_before_reset": int(bool(self.reset_after)),
        }


def init_params(
    input_size: int,
    hidden_size: int,
    *,
    dtype=np.float32,
    seed=None,
    reset_after: bool = True,
    init: str = "torch",
) -> GRUParams:
    """Random GRU parameters.

    init="torch": every weight and bias uniform in [-1/√H, 1/√H] (torch.nn.GRU's default).
    init="keras": Keras GRU defaults — kernel Glorot-uniform, recurrent kernel orthogonal,
    biases zero.
    """
    check_size("input_size", input_size)
    check_size("hidden_size", hidden_size)
    dtype = check_float_dtype("dtype", dtype)
    rng = np.random.default_rng(seed)
    hidden3 = 3 * hidden_size
    if init == "torch":
        bound = 1.0 / np.sqrt(hidden_size)
        shapes = ((hidden3, input_size), (hidden3, hidden_size), (hidden3,), (hidden3,))
        arrays = [rng.uniform(-bound, bound, size=shape) for shape in shapes]
    elif init == "keras":
        limit = np.sqrt(6.0 / (input_size + hidden3))  # glorot_uniform on the (I, 3H) kernel
        w_ih = swap_rz(rng.uniform(-limit, limit, size=(input_size, hidden3)).T)
        q, upper = np.linalg.qr(rng.standard_normal((hidden3, hidden_size)))
        w_hh = swap_rz(q * np.sign(np.diag(upper)))  # orthonormal columns, Keras's Orthogonal
        arrays = [w_ih, w_hh, np.zeros(hidden3), np.zeros(hidden3)]
    else:
        raise ValueError(f"init must be 'torch' or 'keras', got {init!r}")
    return GRUParams(*(a.astype(dtype) for a in arrays), reset_after=reset_after)


def check_size(name: str, value) -> None:
    """A size argument must be a positive integer (not a bool)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def swap_rz(a):
    """Exchange the first two gate blocks along axis 0: [r; z; n] <-> [z; r; n] (PyTorch's gate
    order <-> Keras's and ONNX's): a new C-contiguous array, NumPy or CuPy where `a` lives (a
    transposed `a` is transposed on the way: a NumPy one first by blocks, _fast_transposed)."""
    H = a.shape[0] // 3
    if isinstance(a, np.ndarray) and a.ndim == 2 and a.T.flags.c_contiguous:
        a = _fast_transposed(a.T, _rows_in_order(a.shape[1]))
    out = module_of(a).empty(a.shape, dtype=a.dtype)
    out[:H], out[H : 2 * H], out[2 * H :] = a[H : 2 * H], a[:H], a[2 * H :]
    return out


def keras_columns(w):
    """grukern's (3H, k) rows [r; z; n] -> Keras's (k, 3H) columns [z, r, h], C-contiguous, in
    one pass (swap_rz's inverse is itself: swap_rz(kernel.T) goes back)."""
    H = w.shape[0] // 3
    if isinstance(w, np.ndarray):
        return _fast_transposed(np.ascontiguousarray(w), _keras_rows(H))  # w[[z; r; n]].T
    out = module_of(w).empty(w.shape[::-1], dtype=w.dtype)
    out[:, :H], out[:, H : 2 * H], out[:, 2 * H :] = w[H : 2 * H].T, w[:H].T, w[2 * H :].T
    return out


@functools.lru_cache(maxsize=16)
def _rows_in_order(n: int) -> np.ndarray:
    return np.arange(n)


@functools.lru_cache(maxsize=16)
def _keras_rows(H: int) -> np.ndarray:
    """The rows [z; r; n] of a (3H, k) array in grukern's order [r; z; n]."""
    return np.concatenate([np.arange(H, 2 * H), np.arange(H), np.arange(2 * H, 3 * H)])


def _fast_transposed(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """a[rows].T, C-contiguous, by _numba_matmul.transposed for float32 and float64 (imported
    here: `import grukern` does not load Numba), else by NumPy."""
    if a.dtype not in (np.float32, np.float64):
        return np.ascontiguousarray(a[rows].T)
    from grukern._backends import _numba_matmul

    return _numba_matmul.transposed(a, rows)


def _torch_to_numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().copy()
