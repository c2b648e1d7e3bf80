"""Software prefetch for the row-gather kernels, and when to use it.

A pull kernel (spmm, message_passing, their backward over the transpose)
reads one source row per edge.  When the sources of nearby edges are far
apart in memory, every row is a cache miss, and the loop waits on them one
edge pair at a time: the hardware prefetchers cannot guess a random index.
``prefetch_line`` asks for the row that edge ``k + distance`` will read, so
that many misses are in flight at once.

On a graph whose sources sit next to their destination (the window graph:
each event's sources are the few events just before it) the rows are already
in L1 and the extra instructions only cost time, so ``distance_for`` turns it
off there.  Measured on this project's 2-core benchmark machine: spmm,
F=64 float32, power-law graph of 500k nodes / 8M edges, 1.2-1.3x faster with
a distance of 16 edges (8 to 24 were within noise of each other, 32 and more
slower); on the 2M-event window graph 10-15% slower with it.  The figures of
the last run are in benchmarks/results/conv_cpu.json
(``t_kernel_prefetch_flipped`` is the same call with the choice reversed).

Prefetching never changes a result: the arithmetic and its order are the
same with and without it.
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .. import config

#: Bytes per cache line on the x86-64 and Arm server cores this targets.
LINE_BYTES = 64
#: Edges sampled to judge a graph's locality.
_SAMPLE = 4096
#: A sampled edge whose source row lies within this many bytes of its
#: destination row counts as local (a window graph's sources are a few rows back).
_LOCAL_BYTES = 16 * 1024


@intrinsic
def prefetch_line(typingctx, arr, row, col):
    """Hint the cache line holding ``arr[row, col]`` into L1 (no effect on results).

    ``row`` and ``col`` must be in range; nothing is bounds-checked and
    nothing is loaded, so the call can never fault or change the program's
    values.
    """
    if not (isinstance(arr, types.Array) and arr.ndim == 2
            and isinstance(row, types.Integer) and isinstance(col, types.Integer)):
        return None
    sig = types.void(arr, row, col)

    def codegen(context, builder, sig, args):
        aty = sig.args[0]
        a = context.make_array(aty)(context, builder, args[0])
        r = context.cast(builder, args[1], sig.args[1], types.intp)
        c = context.cast(builder, args[2], sig.args[2], types.intp)
        ptr = cgutils.get_item_pointer(context, builder, aty, a, [r, c], wraparound=False, boundscheck=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = builder.module.declare_intrinsic(
            "llvm.prefetch", [i8p], ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]))
        # rw=0 (read), locality=3 (keep in all levels), cache type=1 (data)
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


def _distances(g) -> np.ndarray:
    """Sorted |source - destination| over an even sample of edges; cached on ``g``."""
    d = getattr(g, "_gather_distances", None)
    if d is None:
        k = np.linspace(0, g.nnz - 1, min(g.nnz, _SAMPLE)).astype(np.int64)
        dst = np.searchsorted(g.indptr, k, side="right") - 1
        d = np.sort(np.abs(g.indices[k].astype(np.int64) - dst))
        g._gather_distances = d
    return d


def distance_for(g, row_bytes: int) -> int:
    """Prefetch distance in edges for a pull over ``g`` reading rows of
    ``row_bytes`` bytes; 0 means no prefetch.

    ``config.cpu_prefetch``: ``"auto"`` (prefetch unless most sampled edges
    are local, see the module docstring), ``True`` or ``False``.
    """
    mode = config.cpu_prefetch
    if mode is False or g.nnz == 0:
        return 0
    if mode == "auto":
        if g.nnz < _SAMPLE:
            return 0  # a small graph's rows are in cache after the first touch
        d = _distances(g)
        local = np.searchsorted(d, _LOCAL_BYTES // max(int(row_bytes), 1), side="right") / d.shape[0]
        if local >= 0.5:
            return 0
    elif mode is not True:
        raise ValueError(f"config.cpu_prefetch must be 'auto', True or False, got {mode!r}")
    return int(config.cpu_prefetch_distance)


@numba.njit(cache=True, inline="always")
def prefetch_row(X, indices, k, nnz):
    """Prefetch every cache line of ``X[indices[k]]``; nothing when ``k >= nnz``."""
    if k < nnz:
        j = indices[k]
        for f in range(0, X.shape[1], max(LINE_BYTES // X.itemsize, 1)):
            prefetch_line(X, j, f)
