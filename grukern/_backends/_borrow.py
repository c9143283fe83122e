"""Arrays without reference counting, for the compiled loops of the Numba backend.

Every view Numba makes of an array (a row h[b], a slice gi[k0 : k0 + m], a panel) takes a
reference to the array's memory and drops it when the view dies: two atomic operations. The
loops take such views of rows at every step and pass them to the row functions, so at small
sizes this reference counting is a large part of a step.

`borrowed(a)` is a with its memory's owner left out: its views count nothing. That is safe only
while the owner keeps the memory alive: the loops' arguments (their caller holds them for the
whole call), and local arrays up to a `keep_alive` of their owner after their last use
(Numba releases a local array after the last use it sees of that variable, and the borrowed
views are not uses of it).
"""

from __future__ import annotations

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def borrowed(typingctx, a):
    """a (an array, or a tuple of arrays and other values) with every array's owner left out."""
    if isinstance(a, types.Array):

        def codegen(context, builder, signature, args):
            return _borrow(context, builder, signature.args[0], args[0])

        return a(a), codegen
    if isinstance(a, types.BaseTuple):

        def codegen(context, builder, signature, args):
            items = []
            for i, item_type in enumerate(signature.args[0]):
                item = builder.extract_value(args[0], i)
                if isinstance(item_type, types.Array):
                    item = _borrow(context, builder, item_type, item)
                items.append(item)
            return context.make_tuple(builder, signature.return_type, items)

        return a(a), codegen
    return None


@intrinsic
def keep_alive(typingctx, a):
    """Nothing: a use of a (an array or a tuple), so that its memory lives at least up to here."""

    def codegen(context, builder, signature, args):
        return context.get_dummy_value()

    return types.none(a), codegen


def _borrow(context, builder, array_type, value):
    owned = context.make_array(array_type)(context, builder, value)
    view = context.make_array(array_type)(context, builder)
    for field in ("nitems", "itemsize", "data", "shape", "strides"):
        setattr(view, field, getattr(owned, field))
    view.meminfo = cgutils.get_null_value(view.meminfo.type)
    view.parent = cgutils.get_null_value(view.parent.type)
    return view._getvalue()
