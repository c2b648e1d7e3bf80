"""GPU window_graph builder (csrc/cuda/window_graph.cu) over sorted input.

``build`` takes events already in (user, time) order -- what
``stgkern.construct`` has after ordering: ``seg_ptr`` (int64, n_seg + 1)
gives each user's node range, ``time`` ascends inside each segment -- and
returns ``(indptr, indices, dt, hop, kind)`` exactly as the CPU builder
``stgkern._numba.window_graph.window_graph`` (same edges, same order within a
row: ascending source).  Two passes, one thread per destination event:
``window_graph_count`` -> ``cupy.cumsum`` -> ``window_graph_fill``.

Category edges need each user's events sorted by (category, position); that
order comes from one ``cupy.lexsort`` over (segment, category, position)
(position as the last key makes it unique, so stability does not matter).
The backward walk over it is bounded by ``category_window`` matches: no scan
cap, no edge is dropped.

``stgkern.construct.window_graph`` calls it for CuPy columns after ordering them on the device.
"""
from __future__ import annotations

import numpy as np

from .. import _dispatch
from ._loader import launch


def _time(time):
    import cupy as cp

    dtype = np.int64 if time.dtype.kind in "iu" else np.float64
    return cp.ascontiguousarray(time, dtype=dtype)


def category_order(seg_ptr, category):
    """``(corder, crank)``: nodes sorted by (segment, category, position), and each node's place in it."""
    import cupy as cp

    n = category.shape[0]
    pos = cp.arange(n, dtype=np.int64)
    seg_of = _dispatch.expand_ptr(seg_ptr)
    corder = cp.ascontiguousarray(cp.lexsort(cp.stack([pos, category.astype(np.int64), seg_of])),
                                  dtype=np.int64)
    crank = cp.empty(n, dtype=np.int64)
    crank[corder] = pos
    return corder, crank


def build(seg_ptr, time, category, window, horizon, strict_time, category_window, self_loops, index_dtype):
    """Validated, sorted input (CuPy).  ``window``/``horizon`` None mean unbounded; ``category``
    None or ``category_window == 0`` mean no category edges.  Returns ``(indptr int64 (n+1,),
    indices index_dtype, dt (time's dtype: int64 or float64), hop int32, kind uint8)``."""
    import cupy as cp

    t = _time(time)
    n = t.shape[0]
    seg_ptr = cp.ascontiguousarray(seg_ptr, dtype=np.int64)
    n_seg = seg_ptr.shape[0] - 1
    index_dtype = np.dtype(index_dtype)
    cat = corder = crank = None
    cat_window = int(category_window or 0)
    if category is not None and cat_window > 0 and n:
        cat = cp.ascontiguousarray(category, dtype=np.int64)
        corder, crank = category_order(seg_ptr, cat)
    else:
        cat_window = 0
    args = (seg_ptr, n_seg, t, cat, corder, crank, -1 if window is None else int(window),
            t.dtype.type(0 if horizon is None else horizon), np.int32(horizon is not None),
            np.int32(bool(strict_time)), cat_window, np.int32(bool(self_loops)), n)
    counts = cp.empty(n, dtype=np.int64)
    launch("window_graph", "window_graph_count", t.dtype, index_dtype, (n + 31) // 32, (*args, counts))
    indptr = _dispatch.offsets(counts)
    nnz = int(indptr[-1])
    indices = cp.empty(nnz, dtype=index_dtype)
    dt = cp.empty(nnz, dtype=t.dtype)
    hop = cp.empty(nnz, dtype=np.int32)
    kind = cp.empty(nnz, dtype=np.uint8)
    launch("window_graph", "window_graph_fill", t.dtype, index_dtype, (n + 31) // 32,
           (*args, indptr, indices, dt, hop, kind))
    return indptr, indices, dt, hop, kind
