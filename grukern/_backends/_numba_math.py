"""Gate activations for the Numba kernels that LLVM can vectorise: exp, σ and tanh.

This Numba/llvmlite build has no SVML, so math.exp and math.tanh stay scalar libm calls inside
otherwise vectorised loops. These versions use only arithmetic, floor, selects and an
integer-to-float bit cast, all of which vectorise, and are accurate to float32 or float64.

Only exp of a non-positive argument is needed: σ and tanh are both written in terms of
e = exp(-|a|) ∈ (0, 1], which cannot overflow (the same stable form as the NumPy reference).

    exp(x), x ≤ 0:   x = n·ln2 + r with |r| ≤ ln2/2,  exp(x) = 2ⁿ · P(r),
                     P the Taylor polynomial of degree 13 (float64), whose truncation error
                     r¹⁴/14! stays below half an ulp, or the minimax polynomial of degree 6
                     for exp on [-ln2/2, ln2/2] (float32, relative error 2.5e-9, an ulp is
                     6e-8); P(r) = Σ (c_2k + c_2k+1·r)·r^2k by Horner's rule in r², whose
                     chain of multiply-adds is half as long as Horner's in r (the gate pass
                     waits on three such chains per unit, one after another for r_t and n_t).
    σ(a)   = 1 / (1 + e)  for a ≥ 0,   e / (1 + e)  for a < 0
    tanh(a) = sign(a) · (1 - e²) / (1 + e²)           (e² = exp(-2|a|))

NaN propagates; ±inf give the limits 0, 1 and ±1.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

LOG2E = 1.4426950408889634

# exp's constants per float type: Cody–Waite split of ln 2 (hi has trailing zero bits so that
# n·ln2_hi is exact); `lowest`, where n = -bias, so that 2ⁿ's exponent field is 0 and the
# result 0 from there down (exp would be subnormal); and P's coefficients, c_0 first.
_F64 = {
    "ln2_hi": 6.93147180369123816490e-01,
    "ln2_lo": 1.90821492927058770002e-10,
    "lowest": -709.0,
    "coefficients": tuple(1.0 / math.factorial(k) for k in range(14)),
}
_F32 = {
    "ln2_hi": 0.693359375,
    "ln2_lo": -2.12194440e-4,
    "lowest": -88.0,
    # minimax on [-ln2/2, ln2/2] (Remez exchange in float64, rounded to float32)
    "coefficients": (
        1.0,
        1.0,
        0.5,
        0.16666415333747864,
        0.04166635125875473,
        0.00837512593716383,
        0.0013941108481958508,
    ),
}


@intrinsic
def _bits_to_float(typingctx, bits):
    """Reinterpret an int64 as float64 or an int32 as float32 (LLVM bitcast, no conversion)."""
    if bits == types.int64:
        return types.float64(bits), lambda context, builder, sig, args: builder.bitcast(
            args[0], ir.DoubleType()
        )
    if bits == types.int32:
        return types.float32(bits), lambda context, builder, sig, args: builder.bitcast(
            args[0], ir.FloatType()
        )
    return None


def _make_activations(constants, float_type, int_type, mantissa_bits, exponent_bias):
    """exp_nonpositive, sigmoid and tanh for one float type, every constant of that type.

    (Numba promotes a Python int or float mixed into float32 arithmetic to float64, so each
    constant is typed here once.)
    """
    ln2_hi = float_type(constants["ln2_hi"])
    ln2_lo = float_type(constants["ln2_lo"])
    lowest = float_type(constants["lowest"])
    log2e = float_type(LOG2E)
    zero, half, one, two = (float_type(v) for v in (0.0, 0.5, 1.0, 2.0))
    coefficients = tuple(float_type(c) for c in constants["coefficients"])
    degree = len(coefficients) - 1

    @njit(error_model="numpy", fastmath={"contract"})
    def exp_nonpositive(x):
        # exp(x) for x ≤ 0 (or NaN). From `lowest` down the result is 0 (it would be subnormal).
        safe = x if x >= lowest else lowest  # also replaces NaN, so the int conversion is defined
        n = np.floor(safe * log2e + half)  # nearest integer to x / ln2
        r = (safe - n * ln2_hi) - n * ln2_lo  # |r| ≤ ln2/2
        r2 = r * r
        # P(r) by Horner's rule in r², on the pairs (c_2k + c_2k+1·r) from the highest
        if degree % 2 == 1:
            p = coefficients[degree - 1] + coefficients[degree] * r
        else:
            p = coefficients[degree]
        for k in range((degree - 1) // 2 - degree % 2, -1, -1):
            p = p * r2 + (coefficients[2 * k] + coefficients[2 * k + 1] * r)
        # 2ⁿ from its bits: biased exponent n + bias in the exponent field (0 at `lowest`: 2ⁿ =
        # 0). (Converting n to int32 first keeps the float-to-int conversion vectorisable
        # without AVX-512DQ.)
        scale = _bits_to_float(int_type((np.int64(np.int32(n)) + exponent_bias) << mantissa_bits))
        result = p * scale
        if x != x:
            result = x
        return result

    @njit(error_model="numpy", fastmath={"contract"})
    def sigmoid(a):
        # σ(a) = 1 / (1 + e^(-a)) via e = exp(-|a|) ≤ 1: no overflow for any a.
        e = exp_nonpositive(-abs(a))
        numerator = one if a >= zero else e
        return numerator / (one + e)

    @njit(error_model="numpy", fastmath={"contract"})
    def tanh(a):
        # tanh(a) = sign(a)(1 - e²)/(1 + e²) with e² = exp(-2|a|) ≤ 1.
        e2 = exp_nonpositive(-two * abs(a))
        numerator = one - e2 if a >= zero else e2 - one
        return numerator / (one + e2)

    return exp_nonpositive, sigmoid, tanh


_ACTIVATIONS = {
    types.float64: _make_activations(_F64, np.float64, np.int64, 52, 1023),
    types.float32: _make_activations(_F32, np.float32, np.int32, 23, 127),
}


def exp_nonpositive(x):
    """exp(x) for x ≤ 0, vectorisable. Callable from @njit code only, as are sigmoid and tanh."""
    raise NotImplementedError("only callable from Numba-compiled code")


def sigmoid(a):
    """σ(a) = 1 / (1 + e^(-a)), stable for any a."""
    raise NotImplementedError("only callable from Numba-compiled code")


def tanh(a):
    """tanh(a), stable for any a."""
    raise NotImplementedError("only callable from Numba-compiled code")


def _register(stub, index):
    @overload(stub)
    def _implementation(x):
        if x in _ACTIVATIONS:
            fn = _ACTIVATIONS[x][index]
            return lambda x: fn(x)
        return None


for _index, _stub in enumerate((exp_nonpositive, sigmoid, tanh)):
    _register(_stub, _index)
