"""SIMD vectors for Numba kernels: the few LLVM vector operations a register-tiled matrix
product needs, as Numba intrinsics.

LLVM's loop vectoriser cannot keep a tile of output vectors in registers across the loop over
the shared dimension: written with scalars and arrays, the tile is either left scalar or kept in
memory that might alias the inputs. These intrinsics name the vectors instead, so a kernel reads
as plain Numba code and LLVM only allocates the registers (_numba_matmul uses them).

A Vector holds VECTOR_BYTES of one float type: the widest register of the CPU Numba compiles
for, 64 bytes with AVX-512 (16 float32 or 8 float64 lanes), 32 with AVX (8 or 4), else 16.
(A wider Vector than the hardware has is still correct: LLVM splits it.) Numba's disk cache
keys compiled code by the CPU's name and features, so code compiled for one width is never
loaded on a CPU that gets another. Loads and stores take any alignment of the float type.
"""

from __future__ import annotations

import os

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model


def _widest_vector_bytes() -> int:
    """64 with AVX-512, 32 with AVX, else 16: for the CPU features Numba compiles for
    (NUMBA_CPU_FEATURES when set, else the host's).

    GRUKERN_VECTOR_BYTES (16, 32 or 64) overrides it, for tests only: Numba caches compiled code
    under the CPU's key, not the width, so the override needs a NUMBA_CACHE_DIR of its own."""
    from numba.core import config

    override = os.environ.get("GRUKERN_VECTOR_BYTES")
    if override:
        if override not in ("16", "32", "64"):
            raise ValueError(f"GRUKERN_VECTOR_BYTES must be 16, 32 or 64, got {override!r}")
        if not os.environ.get("NUMBA_CACHE_DIR"):
            raise RuntimeError(
                "GRUKERN_VECTOR_BYTES is for tests and needs NUMBA_CACHE_DIR set to a folder of "
                "its own (Numba's cache does not tell vector widths apart)"
            )
        return int(override)
    if config.CPU_FEATURES:
        features = {f[1:] for f in config.CPU_FEATURES.split(",") if f.startswith("+")}
    else:
        from llvmlite import binding

        features = {name for name, on in binding.get_host_cpu_features().items() if on}
    if "avx512f" in features:
        return 64
    return 32 if "avx" in features else 16


VECTOR_BYTES = _widest_vector_bytes()


def lanes(dtype) -> int:
    """Floats per Vector of this dtype (8 for float32, 4 for float64)."""
    return VECTOR_BYTES // np.dtype(dtype).itemsize


class Vector(types.Type):
    """The Numba type of a vector of `lanes(dtype)` floats (an LLVM <lanes x float> value)."""

    def __init__(self, dtype: types.Float):
        self.dtype = dtype
        self.lanes = VECTOR_BYTES // (dtype.bitwidth // 8)
        super().__init__(name=f"Vector({dtype} x {self.lanes})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type: Vector):
        lane = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(lane, fe_type.lanes))


def _is_float_matrix(a) -> bool:
    return isinstance(a, types.Array) and a.ndim == 2 and isinstance(a.dtype, types.Float)


def _vector_pointer(context, builder, matrix_type, matrix, i, j):
    """Pointer to matrix[i, j] as a pointer to a Vector (the lanes run along the row)."""
    array = context.make_array(matrix_type)(context, builder, matrix)
    element = cgutils.get_item_pointer(context, builder, matrix_type, array, [i, j])
    vector = context.get_value_type(Vector(matrix_type.dtype))
    return builder.bitcast(element, vector.as_pointer())


@intrinsic
def vector_lanes(typingctx, a):
    """lanes(a.dtype), a compile-time constant, for a 2-d float array a."""
    if not _is_float_matrix(a):
        return None
    count = Vector(a.dtype).lanes

    def codegen(context, builder, signature, args):
        return context.get_constant(types.intp, count)

    return types.intp(a), codegen


@intrinsic
def zeros(typingctx, a):
    """A Vector of zeros of a's dtype."""
    if not _is_float_matrix(a):
        return None
    vector = Vector(a.dtype)

    def codegen(context, builder, signature, args):
        return ir.Constant(context.get_value_type(vector), None)

    return vector(a), codegen


@intrinsic
def splat(typingctx, x):
    """A Vector with x in every lane."""
    if not isinstance(x, types.Float):
        return None
    vector = Vector(x)

    def codegen(context, builder, signature, args):
        value_type = context.get_value_type(vector)
        one_lane = builder.insert_element(
            ir.Constant(value_type, ir.Undefined), args[0], ir.Constant(ir.IntType(32), 0)
        )
        every_lane_from_lane_0 = ir.Constant(ir.VectorType(ir.IntType(32), vector.lanes), None)
        return builder.shuffle_vector(
            one_lane, ir.Constant(value_type, ir.Undefined), every_lane_from_lane_0
        )

    return vector(x), codegen


@intrinsic
def load(typingctx, a, i, j):
    """a[i, j : j + lanes] as a Vector; a's rows must be contiguous and hold those elements."""
    if not _is_float_matrix(a):
        return None
    vector = Vector(a.dtype)

    def codegen(context, builder, signature, args):
        matrix, row, column = args
        pointer = _vector_pointer(context, builder, signature.args[0], matrix, row, column)
        return builder.load(pointer, align=a.dtype.bitwidth // 8)

    return vector(a, types.intp, types.intp), codegen


@intrinsic
def store(typingctx, a, i, j, v):
    """a[i, j : j + lanes] = v (the same layout as load)."""
    if not (_is_float_matrix(a) and v == Vector(a.dtype)):
        return None

    def codegen(context, builder, signature, args):
        matrix, row, column, value = args
        pointer = _vector_pointer(context, builder, signature.args[0], matrix, row, column)
        builder.store(value, pointer, align=a.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(a, types.intp, types.intp, v), codegen


@intrinsic
def lane(typingctx, v, k):
    """Lane k of v, a scalar (0 <= k < lanes)."""
    if not isinstance(v, Vector):
        return None

    def codegen(context, builder, signature, args):
        return builder.extract_element(args[0], args[1])

    return v.dtype(v, types.intp), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c per lane, fused where the machine has FMA (llvm.fmuladd)."""
    if not (isinstance(a, Vector) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        value_type = args[0].type
        suffix = "f32" if a.dtype == types.float32 else "f64"
        fmuladd = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(value_type, [value_type] * 3),
            f"llvm.fmuladd.v{a.lanes}{suffix}",
        )
        return builder.call(fmuladd, args)

    return a(a, b, c), codegen


@intrinsic
def total(typingctx, v):
    """The sum of v's lanes, as a tree of adds (llvm.vector.reduce.fadd, reassociated)."""
    if not isinstance(v, Vector):
        return None

    def codegen(context, builder, signature, args):
        value_type = args[0].type
        lane_type = value_type.element
        suffix = "f32" if v.dtype == types.float32 else "f64"
        reduce = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(lane_type, [lane_type, value_type]),
            f"llvm.vector.reduce.fadd.v{v.lanes}{suffix}",
        )
        return builder.call(reduce, [ir.Constant(lane_type, 0.0), args[0]], fastmath=("reassoc",))

    return v.dtype(v), codegen


@intrinsic
def transpose_into(typingctx, src, rows, q, dst, i, j):
    """dst[i + a, j + b] = src[rows[b], q + a] for a, b < lanes: the lanes × lanes block of
    src's rows `rows` (lanes of them) from column q, transposed into dst from (i, j). Each row
    is one Vector load and each column one store, with log2(lanes) rounds of shuffles between
    (round k exchanges bit k of the row index with bit k of the lane index), where an element
    by element copy makes a scattered store per element."""
    if not (
        _is_float_matrix(src)
        and _is_float_matrix(dst)
        and src.dtype == dst.dtype
        and isinstance(rows, types.Array)
        and rows.ndim == 1
        and isinstance(rows.dtype, types.Integer)
    ):
        return None
    count = Vector(src.dtype).lanes

    def codegen(context, builder, signature, args):
        src_value, rows_value, column, dst_value, row, first = args
        src_type, rows_type, _, dst_type, _, _ = signature.args
        indices = context.make_array(rows_type)(context, builder, rows_value)
        align = src.dtype.bitwidth // 8

        def constant(k):
            return context.get_constant(types.intp, k)

        vectors = []
        for b in range(count):
            where = cgutils.get_item_pointer(context, builder, rows_type, indices, [constant(b)])
            source_row = context.cast(builder, builder.load(where), rows_type.dtype, types.intp)
            pointer = _vector_pointer(context, builder, src_type, src_value, source_row, column)
            vectors.append(builder.load(pointer, align=align))
        mask_type = ir.VectorType(ir.IntType(32), count)
        k = 1
        while k < count:
            low = ir.Constant(mask_type, [c if not c & k else count + c - k for c in range(count)])
            high = ir.Constant(mask_type, [c + k if not c & k else count + c for c in range(count)])
            for a in range(count):
                if not a & k:
                    pair = vectors[a], vectors[a | k]
                    vectors[a] = builder.shuffle_vector(*pair, low)
                    vectors[a | k] = builder.shuffle_vector(*pair, high)
            k *= 2
        for a in range(count):
            target = builder.add(row, constant(a))
            pointer = _vector_pointer(context, builder, dst_type, dst_value, target, first)
            builder.store(vectors[a], pointer, align=align)
        return context.get_dummy_value()

    return types.none(src, rows, types.intp, dst, types.intp, types.intp), codegen
